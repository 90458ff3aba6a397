/**
 * Streaming inline suggestions, one in-flight request per document.
 *
 * VS Code asks the provider for items and shows what it returns; to make ghost text grow while
 * the server streams `codedec/partial`, the provider is asked again (the extension's `refresh`:
 * `inlineSuggest.hide`, then `inlineSuggest.trigger`) on every partial and on the final answer,
 * and each time answers from here, without a new request, as long as the cursor is where the
 * request was made (`key`: document version + position).
 *
 * Request ids: the server names its JSON-RPC request id in each partial and in the final item's
 * `codedec.accepted` command arguments; accept/reject reports use it. Each id is reported at most
 * once (`codedec stats` counts events): the first accept of any kind (`full` — Tab, `word`,
 * `line`, `typed` — the user typed the whole suggestion), or a reject when a suggestion that was
 * shown is superseded by a new request or its document closes without an accept.
 *
 * Typing ahead: when the user types characters of the suggestion (`typeAhead`), the entry answers
 * at the new cursor with the rest, without a new request, as the Neovim plugin does.
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

/** Where a request was made: its line, character and the line's text before the cursor. */
export interface Anchor {
  line: number;
  character: number;
  before: string;
}

export type AcceptKind = "full" | "word" | "line" | "typed";

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
  onReject(args: { id: RequestId; uri: string; reason: string }): void;
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
  anchor?: Anchor;
  typed: string; // typed ahead since the request (the suggestion shown is text minus this)
  wake?: () => void;
}

const REPORTED_MAX = 256;

export class InlineSession {
  private entries = new Map<string, Entry>();
  private reported = new Set<RequestId>();

  constructor(
    private readonly hooks: SessionHooks,
    private readonly now: () => number = () => Date.now(),
  ) {}

  /** What to show for `uri` at `key`, or undefined when no request was made there. */
  current(uri: string, key: string): Shown | undefined {
    const e = this.entries.get(uri);
    if (!e || e.key !== key) return undefined;
    const text = e.text.startsWith(e.typed) ? e.text.slice(e.typed.length) : "";
    return { text, id: e.id ?? e.args?.id, done: e.done, args: e.args };
  }

  /** Where the live request of `uri` was made, if it was given one. */
  anchor(uri: string): Anchor | undefined {
    return this.entries.get(uri)?.anchor;
  }

  /**
   * The user typed `typed` at the position of the live request of `uri` and the cursor is now at
   * `key`. `continue`: `typed` is a prefix of the suggestion (or of the text so far), the entry now
   * answers at `key` with the rest. `accepted`: the whole final suggestion was typed; reported
   * once as an accept of kind `typed` (the report is returned) and the entry is dropped.
   * `diverged`: neither (the caller makes a new request, which supersedes this one).
   */
  typeAhead(uri: string, key: string, typed: string): { result: "continue" | "diverged" } | { result: "accepted"; report?: ItemArgs } {
    const e = this.entries.get(uri);
    if (!e || !typed || !e.text.startsWith(typed)) return { result: "diverged" };
    if (e.done && typed === e.text) {
      const report = this.accept(uri, "typed");
      this.entries.delete(uri);
      return { result: "accepted", report };
    }
    e.key = key;
    e.typed = typed;
    return { result: "continue" };
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
  start(uri: string, key: string, send: () => Promise<Answer | null>, waitMs = 5000, anchor?: Anchor): Promise<void> {
    this.supersede(uri, "superseded");
    const entry: Entry = {
      key, uri, text: "", done: false, shown: false, accepted: false, started: this.now(), anchor, typed: "",
    };
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
    if (e && e.key === key && this.current(uri, key)?.text) e.shown = true;
  }

  /**
   * The user accepted (part of) the suggestion of `uri`: the `codedec/accept` arguments to send,
   * or undefined when there is nothing to report (no request id known, or this id was reported
   * already). `item`: the accepted item's command arguments (they name the id even when the
   * document has moved on to a newer request).
   */
  accept(uri: string, kind: AcceptKind = "full", item?: ItemArgs): ItemArgs | undefined {
    const e = this.entries.get(uri);
    const liveId = e ? e.id ?? e.args?.id : undefined;
    const id = item?.id ?? liveId;
    if (id === undefined) return undefined;
    if (e && id === liveId) e.accepted = true;
    if (!this.report(id)) return undefined;
    const args = id === liveId ? e?.args : undefined;
    return { ...(args ?? {}), ...(item ?? {}), id, uri, kind };
  }

  /** The document closed, or completions were turned off: drop its request (a shown one is rejected). */
  forget(uri: string): void {
    this.supersede(uri, "closed");
    this.entries.delete(uri);
  }

  private supersede(uri: string, reason: string): void {
    const old = this.entries.get(uri);
    if (!old) return;
    const id = old.id ?? old.args?.id;
    if (old.shown && !old.accepted && id !== undefined && this.report(id)) this.hooks.onReject({ id, uri, reason });
    old.wake?.();
  }

  /** A new server connection (request ids start over): drop every request, unreported. */
  reset(): void {
    for (const e of this.entries.values()) e.wake?.();
    this.entries.clear();
    this.reported.clear();
  }

  /** Note that `id` is reported; false if it was already. */
  private report(id: RequestId): boolean {
    if (this.reported.has(id)) return false;
    this.reported.add(id);
    if (this.reported.size > REPORTED_MAX) this.reported.delete(this.reported.values().next().value as RequestId);
    return true;
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
