/**
 * The extension's wiring, with the `vscode` API and the language-client factory passed in (so
 * tests drive it with stubs): settings -> server process; inline completion provider fed by
 * `InlineSession`; accept / accept word / accept line commands that report to the server; status
 * bar; toggle / restart / show-log commands; restart with backoff when the server dies.
 */

import type * as vscode from "vscode";
import { isExecutableFile, Located, locateServer } from "./locate";
import { RestartPolicy } from "./restart";
import { Answer, InlineSession, ItemArgs, PartialNote } from "./session";
import { needsRestart, readSettings, serverCommand, serverOptions, Settings } from "./settings";
import { render, State, StatusMachine } from "./status";

export type Vscode = typeof vscode;

/** What the extension needs of a language client (vscode-languageclient's LanguageClient has it). */
export interface ClientLike {
  start(): Promise<void>;
  stop(): Promise<void>;
  sendRequest<R>(method: string, params: unknown, token?: vscode.CancellationToken): Promise<R>;
  sendNotification(method: string, params?: unknown): Promise<void>;
  onNotification(method: string, handler: (params: any) => void): vscode.Disposable;
}

export interface ClientSpec {
  command: string;
  args: string[];
  languages: string[];
  initializationOptions: Record<string, unknown>;
  output: vscode.OutputChannel;
  /** Call when the server process exits unexpectedly (the factory must not restart by itself). */
  onClosed: () => void;
}

export type ClientFactory = (spec: ClientSpec) => ClientLike;

export interface Deps {
  setTimeout: (fn: () => void, ms: number) => unknown;
  now: () => number;
  /** `codedec.serverPath` -> the executable to run (see locate.ts); absent: used as is. */
  locate?: (name: string, workspaceDirs: string[]) => Located;
}

/** The real timers, clock and PATH search. */
export const REAL_DEPS: Deps = {
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  now: () => Date.now(),
  locate: (name, workspaceDirs) =>
    locateServer(name, {
      PATH: process.env.PATH,
      PATHEXT: process.env.PATHEXT,
      platform: process.platform,
      workspaceDirs,
      isExecutable: isExecutableFile,
    }),
};

export const COMMANDS = {
  accepted: "codedec.accepted",
  acceptWord: "codedec.acceptWord",
  acceptLine: "codedec.acceptLine",
  toggle: "codedec.toggle",
  restart: "codedec.restartServer",
  showLog: "codedec.showLog",
} as const;

interface InlineItemWire {
  insertText: string | { value: string };
  command?: { command: string; arguments?: unknown[] };
}

export class Extension {
  settings: Settings;
  client: ClientLike | undefined;
  readonly statusModel: StatusMachine;
  readonly session: InlineSession;
  readonly output: vscode.OutputChannel;
  readonly status: vscode.StatusBarItem;
  private readonly policy = new RestartPolicy();
  private stopping = false;
  private generation = 0;
  private providerDisposable: vscode.Disposable | undefined;
  private refreshing = false;
  private refreshAgain = false;
  private listeners: vscode.Disposable[] = [];

  constructor(
    private readonly vs: Vscode,
    private readonly context: vscode.ExtensionContext,
    private readonly makeClient: ClientFactory,
    private readonly deps: Deps = REAL_DEPS,
  ) {
    this.output = vs.window.createOutputChannel("codedec");
    this.settings = this.readSettingsSafely();
    this.status = vs.window.createStatusBarItem(vs.StatusBarAlignment.Right, 100);
    this.status.command = COMMANDS.showLog;
    this.statusModel = new StatusMachine((shown) => this.render(shown));
    this.statusModel.setEnabled(this.settings.enabled);
    this.session = new InlineSession(
      {
        onUpdate: (uri) => this.refresh(uri),
        onReject: (args) => void this.notify("codedec/reject", args),
        onFinished: (_uri, latencyMs, answer, error) => this.finished(latencyMs, answer, error),
      },
      deps.now,
    );
    context.subscriptions.push(this.output, this.status);
  }

  // ---- life cycle

  async activate(): Promise<void> {
    const { vs, context } = this;
    const reg = (name: string, fn: (...a: any[]) => unknown) =>
      context.subscriptions.push(vs.commands.registerCommand(name, fn));
    reg(COMMANDS.accepted, (args: ItemArgs) => this.accepted(args));
    reg(COMMANDS.acceptWord, () => this.acceptPart("word", "editor.action.inlineSuggest.acceptNextWord"));
    reg(COMMANDS.acceptLine, () => this.acceptPart("line", "editor.action.inlineSuggest.acceptNextLine"));
    reg(COMMANDS.toggle, () => this.toggle());
    reg(COMMANDS.restart, () => this.restart(true));
    reg(COMMANDS.showLog, () => this.output.show(true));
    context.subscriptions.push(
      vs.workspace.onDidChangeConfiguration((e) => {
        if (e.affectsConfiguration("codedec")) void this.configurationChanged();
      }),
      vs.workspace.onDidCloseTextDocument((doc) => this.session.forget(doc.uri.toString())),
      { dispose: () => void this.stop() },
    );
    this.registerProvider();
    this.status.show();
    await this.startClient();
  }

  async stop(): Promise<void> {
    this.stopping = true;
    const client = this.client;
    this.client = undefined;
    this.listeners.forEach((d) => d.dispose());
    this.listeners = [];
    if (client) {
      try {
        await client.stop();
      } catch (err) {
        this.log(`stopping the server: ${err}`);
      }
    }
  }

  private async startClient(): Promise<void> {
    const s = this.settings;
    const generation = ++this.generation;
    this.stopping = false;
    const { command: name, args } = serverCommand(s);
    const folders = (this.vs.workspace.workspaceFolders ?? []).map((f) => f.uri.fsPath);
    const located = this.deps.locate ? this.deps.locate(name, folders) : { path: name };
    if ("error" in located) {
      this.log(located.error);
      this.statusModel.error(located.error);
      void this.vs.window.showErrorMessage(`codedec: ${located.error}`);
      return;
    }
    const command = located.path;
    this.log(`starting: ${command} ${args.join(" ")}`);
    const client = this.makeClient({
      command,
      args,
      languages: s.languages,
      initializationOptions: serverOptions(s),
      output: this.output,
      onClosed: () => this.closed(generation),
    });
    this.client = client;
    this.session.reset(); // request ids start over with the new connection
    this.listeners = [
      client.onNotification("codedec/partial", (p: PartialNote) => this.session.onPartial(p)),
      client.onNotification("codedec/status", (p: { state: string; message: string }) => this.serverStatus(p)),
    ];
    this.statusModel.starting();
    try {
      await client.start();
    } catch (err) {
      this.statusModel.error(`the server did not start: ${err}`);
      this.log(`the server did not start (${command}): ${err}. Set codedec.serverPath to the codedec executable.`);
    }
  }

  /** The server process exited (not by our stop): restart with backoff, say so once per burst. */
  private closed(generation: number): void {
    if (this.stopping || generation !== this.generation) return;
    const d = this.policy.onCrash(this.deps.now());
    if (!d.restart) {
      this.statusModel.error("the server keeps crashing; not restarting (see the log)");
      void this.vs.window.showErrorMessage("codedec: the server keeps crashing and was not restarted. See the codedec log.");
      return;
    }
    if (d.firstInBurst) {
      void this.vs.window.showWarningMessage(`codedec: the server stopped; restarting it.`);
    }
    this.log(`the server stopped; restarting in ${d.delayMs} ms`);
    this.statusModel.error(`the server stopped; restarting in ${Math.round(d.delayMs / 1000)} s`);
    this.deps.setTimeout(() => {
      if (generation === this.generation && !this.stopping) void this.startClient();
    }, d.delayMs);
  }

  async restart(byUser: boolean): Promise<void> {
    if (byUser) this.policy.reset();
    await this.stop();
    await this.startClient();
  }

  private async configurationChanged(): Promise<void> {
    const before = this.settings;
    this.settings = this.readSettingsSafely();
    if (this.settings.enabled !== before.enabled) this.statusModel.setEnabled(this.settings.enabled);
    if (this.settings.languages.join() !== before.languages.join()) this.registerProvider();
    if (needsRestart(before, this.settings)) {
      await this.restart(true);
    } else {
      await this.notify("workspace/didChangeConfiguration", { settings: { codedec: serverOptions(this.settings) } });
    }
  }

  private readSettingsSafely(): Settings {
    const config = this.vs.workspace.getConfiguration("codedec");
    try {
      return readSettings((key) => config.get(key));
    } catch (err) {
      void this.vs.window.showErrorMessage(`${err instanceof Error ? err.message : err}; using the defaults`);
      return readSettings(() => undefined);
    }
  }

  // ---- inline completion

  private registerProvider(): void {
    this.providerDisposable?.dispose();
    const selector = this.settings.languages.map((language) => ({ language }));
    this.providerDisposable = this.vs.languages.registerInlineCompletionItemProvider(selector, {
      provideInlineCompletionItems: (doc, position, ctx, token) => this.provide(doc, position, ctx, token),
    });
    this.context.subscriptions.push(this.providerDisposable);
  }

  async provide(
    doc: vscode.TextDocument,
    position: vscode.Position,
    _ctx: vscode.InlineCompletionContext,
    token: vscode.CancellationToken,
  ): Promise<vscode.InlineCompletionItem[] | undefined> {
    const client = this.client;
    if (!this.enabled || !client) return undefined;
    const uri = doc.uri.toString();
    const key = keyOf(doc.version, position);
    const lineText = doc.lineAt(position.line).text;
    let shown = this.session.current(uri, key) ?? this.typedAhead(uri, key, position, lineText);
    if (!shown) {
      const params = {
        textDocument: { uri },
        position: { line: position.line, character: position.character },
        context: { triggerKind: 2 },
      };
      this.statusModel.generating();
      // Not tied to VS Code's token: re-asking (to grow the text) cancels the provider call, and
      // that must not cancel the generation. A newer request for the document supersedes it.
      const anchor = { line: position.line, character: position.character, before: lineText.slice(0, position.character) };
      const waiting = this.session.start(
        uri,
        key,
        () => client.sendRequest<{ items: InlineItemWire[] } | InlineItemWire[] | null>("textDocument/inlineCompletion", params)
          .then(toAnswer),
        5000,
        anchor,
      );
      await waiting;
      if (token.isCancellationRequested) return undefined;
      shown = this.session.current(uri, key);
    }
    if (!shown || !shown.text) return [];
    this.session.markShown(uri, key);
    const range = new this.vs.Range(position, position);
    const args = shown.args ?? (shown.id !== undefined ? { id: shown.id, uri, partial_text: true } : undefined);
    const command = args ? { title: "codedec: accepted", command: COMMANDS.accepted, arguments: [args] } : undefined;
    return [new this.vs.InlineCompletionItem(shown.text, range, command)];
  }

  /**
   * The suggestion of `uri` changed (a partial or the final answer): make VS Code ask the provider
   * again. VS Code keeps the items it got for a document version and cursor position, and answers
   * a later trigger at the same place from them without calling the provider — the ghost text
   * would stay at the first partial, or stay empty when the first call gave up waiting — so the
   * kept items are dropped first (`hide`), then the provider is asked (`trigger`). Only while the
   * active editor shows `uri` with the cursor where the request was made (hiding anywhere else
   * would drop another suggestion); refreshes are serialized, a burst collapsing into one more.
   */
  private refresh(uri: string): void {
    const editor = this.vs.window.activeTextEditor;
    if (!editor || editor.document.uri.toString() !== uri) return;
    const pos = editor.selection?.active;
    if (pos && !this.session.current(uri, keyOf(editor.document.version, pos))) return;
    this.reask();
  }

  /**
   * The model just became ready: ask again where the cursor is. Typing while the server starts
   * reaches the provider before there is a client to ask (or while the document is not yet open
   * on the server), VS Code keeps that empty answer, and without this nothing would show until
   * the next keystroke.
   */
  private readyAtCursor(): void {
    const editor = this.vs.window.activeTextEditor;
    if (!editor || !this.enabled || !this.settings.languages.includes(editor.document.languageId)) return;
    const uri = editor.document.uri.toString();
    if (this.session.busy(uri)) return; // a request made while loading is answered by its partials
    this.reask();
  }

  /** Drop VS Code's kept items and ask the provider again (serialized; a burst makes one more). */
  private reask(): void {
    if (this.refreshing) {
      this.refreshAgain = true;
      return;
    }
    this.refreshing = true;
    const run = async () => {
      do {
        this.refreshAgain = false;
        await this.vs.commands.executeCommand("editor.action.inlineSuggest.hide");
        await this.vs.commands.executeCommand("editor.action.inlineSuggest.trigger");
      } while (this.refreshAgain);
    };
    void run().catch((err) => this.log(`refreshing the suggestion: ${err}`)).finally(() => {
      this.refreshing = false;
    });
  }

  /**
   * Typing ahead: the cursor moved right on the line of the document's live request, and what
   * was typed there is the start of the suggestion -> the rest, without a new request. The whole
   * suggestion typed is reported as accepted (kind `typed`), and a new request follows.
   */
  private typedAhead(uri: string, key: string, position: vscode.Position, lineText: string) {
    const anchor = this.session.anchor(uri);
    if (!anchor || anchor.line !== position.line || position.character <= anchor.character) return undefined;
    if (lineText.slice(0, anchor.character) !== anchor.before) return undefined;
    const r = this.session.typeAhead(uri, key, lineText.slice(anchor.character, position.character));
    if (r.result === "accepted" && r.report) void this.notify("codedec/accept", r.report);
    return r.result === "continue" ? this.session.current(uri, key) : undefined;
  }

  /** VS Code ran an item's command: the user accepted the whole suggestion (Tab). */
  private accepted(args: ItemArgs | undefined): void {
    if (!args?.uri) return;
    const report = this.session.accept(args.uri, "full", args);
    if (report) void this.notify("codedec/accept", report);
  }

  private async acceptPart(part: "word" | "line", builtin: string): Promise<void> {
    const uri = this.vs.window.activeTextEditor?.document.uri.toString();
    await this.vs.commands.executeCommand(builtin);
    const report = uri ? this.session.accept(uri, part) : undefined;
    if (report) await this.notify("codedec/accept", report);
  }

  private toggle(): void {
    this.statusModel.setEnabled(!this.enabled);
    this.log(`completions ${this.enabled ? "on" : "off"}`);
  }

  // ---- status

  private serverStatus(p: { state: string; message: string }): void {
    if (p.state === "loading") this.statusModel.loading(p.message);
    else if (p.state === "ready") {
      this.statusModel.ready();
      this.readyAtCursor();
    }
    else if (p.state === "error") this.statusModel.error(p.message);
    this.log(p.message);
  }

  private finished(latencyMs: number, answer: Answer | null, error: unknown): void {
    if (error !== undefined) {
      this.log(`completion failed: ${error instanceof Error ? error.message : JSON.stringify(error)}`);
    }
    if (this.session.busy()) return;
    const tokens = answer?.args?.tokens;
    const ms = answer?.args?.total_ms;
    this.statusModel.finished(
      latencyMs,
      typeof tokens === "number" && typeof ms === "number" && ms > 0 ? (tokens * 1000) / ms : undefined,
    );
  }

  /** Are completions on (setting `codedec.enabled`, flipped by the toggle command)? */
  get enabled(): boolean {
    return this.statusModel.enabled;
  }

  /** What the status bar shows. */
  get state(): State {
    return this.statusModel.shown;
  }

  private render(s: State): void {
    const r = render(s, this.settings.model);
    this.status.text = r.text;
    this.status.tooltip = r.tooltip;
  }

  private async notify(method: string, params: unknown): Promise<void> {
    try {
      await this.client?.sendNotification(method, params);
    } catch (err) {
      this.log(`${method} not sent: ${err}`);
    }
  }

  private log(message: string): void {
    this.output.appendLine(`[${new Date(this.deps.now()).toISOString()}] ${message}`);
  }
}

/** Where a request was made: the document version and the cursor (the session's `key`). */
function keyOf(version: number, pos: { line: number; character: number }): string {
  return `${version}:${pos.line}:${pos.character}`;
}

/** The server's inlineCompletion result -> the first item's text and accept arguments. */
export function toAnswer(result: { items: InlineItemWire[] } | InlineItemWire[] | null | undefined): Answer {
  const items = Array.isArray(result) ? result : result?.items ?? [];
  const first = items[0];
  if (!first) return { text: "" };
  const text = typeof first.insertText === "string" ? first.insertText : first.insertText.value;
  const args = first.command?.command === COMMANDS.accepted ? (first.command.arguments?.[0] as ItemArgs) : undefined;
  return { text, args };
}
