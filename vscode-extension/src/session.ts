/**
 * Streaming inline suggestions, one in-flight request per document.
 *
 * VS Code asks the provider for items and shows what it returns; to make ghost text grow while
 * the server streams `codedec/partial`, the provider is asked again (`inlineSuggest.trigger`) on
 * every partial and on the final answer, and each time answers from here, without a new request,
 * as long as the cursor is where the request was made (`key`: document version + position).
 *
 * Request ids: the server names its JSON-RPC request id in each partial and in the final item's
 * `codedec.accepted` command arguments; accept/reject reports use it.
 *
 * No `vscode` import: unit-tested with plain objects.
 */

export type RequestId = string | number;

export interface PartialNote {
  id: RequestId;
  uri: string;
  text: string;
}

export interface ItemArgs {
  id: RequestId;
  uri: string;
  tokens?: number;
  total_ms?: number;
  [extra: string]: unknown;
}

/** The server's final answer: the text (empty: nothing to show) and its accept-command arguments. */
export interface Answer {
  text: string;
  args?: ItemArgs;
}

export interface Shown {
  text: string;
  id?: RequestId;
  done: boolean;
  args?: ItemArgs;
}

export interface SessionHooks {
  /** The text for `uri` changed (a partial or the final answer): ask the provider again. */
  onUpdate(uri: string): void;
  /** A suggestion the user saw was replaced without being accepted. */
  onReject(args: { id: RequestId; uri: string }): void;
  /** A request finished: its latency and, when known, tokens/s (for the status bar). */
  onFinished?(uri: string, latencyMs: number, answer: Answer | null, error?: unknown): void;
}

interface Entry {
  key: string;
  uri: string;
  id?: RequestId;
  text: string;
  done: boolean;
  args?: ItemArgs;
  shown: boolean;
  accepted: boolean;
  started: number;
  wake?: () => void;
}

export class InlineSession {
  private entries = new Map<string, Entry>();

  constructor(
    private readonly hooks: SessionHooks,
    private readonly now: () => number = () => Date.now(),
  ) {}

  /** What to show for `uri` at `key`, or undefined when no request was made there. */
  current(uri: string, key: string): Shown | undefined {
    const e = this.entries.get(uri);
    if (!e || e.key !== key) return undefined;
    return { text: e.text, id: e.id ?? e.args?.id, done: e.done, args: e.args };
  }

  /** Is a request for `uri` still running? */
  busy(uri?: string): boolean {
    if (uri !== undefined) return !!this.entries.get(uri) && !this.entries.get(uri)!.done;
    return [...this.entries.values()].some((e) => !e.done);
  }

  /**
   * Start a request for `uri` at `key` (replacing the previous one of that document, which is
   * reported rejected if it was shown and not accepted). `send` performs it. The returned promise
   * resolves at the first partial or at the end, whichever comes first, or after `waitMs`.
   */
  start(uri: string, key: string, send: () => Promise<Answer | null>, waitMs = 5000): Promise<void> {
    this.supersede(uri);
    const entry: Entry = { key, uri, text: "", done: false, shown: false, accepted: false, started: this.now() };
    this.entries.set(uri, entry);
    const first = new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, waitMs);
      entry.wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
    send().then(
      (answer) => this.finish(entry, answer),
      (err) => this.finish(entry, null, err),
    );
    return first;
  }

  /** A `codedec/partial` notification. Ignored unless it belongs to the document's live request. */
  onPartial(note: PartialNote): void {
    const e = this.entries.get(note.uri);
    if (!e || e.done) return;
    if (e.id !== undefined && e.id !== note.id) return; // a superseded request's late partial
    e.id = note.id;
    e.text = note.text;
    e.wake?.();
    this.hooks.onUpdate(note.uri);
  }

  /** The provider returned a non-empty suggestion for `uri` at `key`. */
  markShown(uri: string, key: string): void {
    const e = this.entries.get(uri);
    if (e && e.key === key && e.text) e.shown = true;
  }

  /** The user accepted (part of) the suggestion of `uri`: its report arguments, if any. */
  accept(uri: string, partial?: "word" | "line"): ItemArgs | undefined {
    const e = this.entries.get(uri);
    if (!e) return undefined;
    if (!partial) e.accepted = true;
    const id = e.id ?? e.args?.id;
    if (id === undefined) return undefined;
    return { ...(e.args ?? {}), id, uri, ...(partial ? { partial } : {}) };
  }

  /** The document closed, or completions were turned off: drop its request (a shown one is rejected). */
  forget(uri: string): void {
    this.supersede(uri);
    this.entries.delete(uri);
  }

  private supersede(uri: string): void {
    const old = this.entries.get(uri);
    if (!old) return;
    const id = old.id ?? old.args?.id;
    if (old.shown && !old.accepted && id !== undefined) this.hooks.onReject({ id, uri });
    old.wake?.();
  }

  private finish(entry: Entry, answer: Answer | null, error?: unknown): void {
    entry.done = true;
    const live = this.entries.get(entry.uri) === entry;
    if (live && answer) {
      entry.text = answer.text;
      entry.args = answer.args;
      if (answer.args?.id !== undefined) entry.id = answer.args.id;
    } else if (live && !answer) {
      entry.text = error === undefined ? entry.text : "";
    }
    entry.wake?.();
    this.hooks.onFinished?.(entry.uri, this.now() - entry.started, live ? answer : null, error);
    if (live) this.hooks.onUpdate(entry.uri);
  }
}
