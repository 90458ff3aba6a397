/**
 * The status bar item's model: one state at a time, rendered to text + tooltip. Clicking it
 * opens the log in every state (the error state most of all).
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
