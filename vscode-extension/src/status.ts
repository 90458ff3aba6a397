/**
 * The status bar item's model: one state at a time, rendered to text + tooltip. Clicking it
 * opens the log in every state (the error state most of all).
 *
 * `StatusMachine` holds the server's state and the enabled flag, and says what to show:
 *   starting -> loading (server messages) -> idle <-> generating; any -> error; error -> starting
 *   (a restart). Generating is shown only once the server is ready (a request made while the model
 *   loads keeps the loading display); finishing shows idle with the last latency and tokens/s.
 *   Turning completions off shows `disabled` (an error still shows), on shows the server state again.
 */

export type State =
  | { kind: "starting" }
  | { kind: "loading"; message: string }
  | { kind: "idle"; latencyMs?: number; tokensPerS?: number }
  | { kind: "generating" }
  | { kind: "disabled" }
  | { kind: "error"; message: string };

export interface Rendered {
  text: string;
  tooltip: string;
}

export function render(s: State, model: string): Rendered {
  switch (s.kind) {
    case "starting":
      return { text: "$(sync~spin) codedec", tooltip: `codedec: starting the server (${model})` };
    case "loading":
      return { text: "$(sync~spin) codedec: loading", tooltip: `codedec: ${s.message}` };
    case "generating":
      return { text: "$(loading~spin) codedec", tooltip: "codedec: generating" };
    case "disabled":
      return { text: "$(circle-slash) codedec", tooltip: "codedec: completions are off (click: log; toggle with `codedec: Toggle`)" };
    case "error":
      return { text: "$(error) codedec", tooltip: `codedec: ${s.message} (click to open the log)` };
    case "idle": {
      const parts = [];
      if (s.latencyMs !== undefined) parts.push(`${Math.round(s.latencyMs)} ms`);
      if (s.tokensPerS !== undefined && Number.isFinite(s.tokensPerS)) parts.push(`${s.tokensPerS.toFixed(0)} tok/s`);
      const detail = parts.length ? ` ${parts.join(" · ")}` : "";
      return { text: `$(check) codedec${detail}`, tooltip: `codedec: ready (${model})${parts.length ? `; last completion ${parts.join(", ")}` : ""}` };
    }
  }
}

export class StatusMachine {
  private server: State = { kind: "starting" };
  private on = true;

  /** `changed` gets the state to show after every transition. */
  constructor(private readonly changed: (shown: State) => void = () => {}) {}

  /** What the status bar shows. */
  get shown(): State {
    return !this.on && this.server.kind !== "error" ? { kind: "disabled" } : this.server;
  }

  /** The server's own state (also while completions are off). */
  get serverState(): State {
    return this.server;
  }

  get enabled(): boolean {
    return this.on;
  }

  setEnabled(on: boolean): void {
    this.on = on;
    this.emit();
  }

  starting(): void {
    this.set({ kind: "starting" });
  }

  loading(message: string): void {
    this.set({ kind: "loading", message });
  }

  ready(): void {
    this.set({ kind: "idle" });
  }

  error(message: string): void {
    this.set({ kind: "error", message });
  }

  /** A request went to the model (shown only when the server is ready). */
  generating(): void {
    if (this.server.kind === "idle" || this.server.kind === "generating") this.set({ kind: "generating" });
  }

  /** The last running request finished: idle with its latency and tokens/s (when known). */
  finished(latencyMs: number, tokensPerS?: number): void {
    if (this.server.kind === "idle" || this.server.kind === "generating") this.set({ kind: "idle", latencyMs, tokensPerS });
  }

  private set(s: State): void {
    this.server = s;
    this.emit();
  }

  private emit(): void {
    this.changed(this.shown);
  }
}
