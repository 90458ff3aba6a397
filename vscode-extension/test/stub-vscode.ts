/**
 * A stubbed `vscode` API: just what `core.Extension` touches, recording what it is asked to do.
 * `config` holds the `codedec.*` settings the extension reads.
 */

export class Position {
  constructor(readonly line: number, readonly character: number) {}
}
export class Range {
  constructor(readonly start: Position, readonly end: Position) {}
}
export class InlineCompletionItem {
  constructor(readonly insertText: string, readonly range?: Range, readonly command?: any) {}
}

/** An active text editor on `uri` (document `version`) with the cursor at `pos`. */
export function activeEditor(uri: string, version: number, pos: Position) {
  return { document: { uri: { toString: () => uri }, version, languageId: "python" }, selection: { active: pos } };
}

export function makeVscode(config: Record<string, unknown> = {}) {
  const commands = new Map<string, (...a: any[]) => any>();
  const executed: string[] = [];
  const messages: { level: string; text: string }[] = [];
  const logLines: string[] = [];
  const providers: { selector: any; provider: any; disposed: boolean }[] = [];
  const configListeners: ((e: any) => void)[] = [];
  const status = { text: "", tooltip: "", command: "", shown: false, show() { this.shown = true; }, dispose() {} };
  const api = {
    StatusBarAlignment: { Left: 1, Right: 2 },
    Range,
    Position,
    InlineCompletionItem,
    window: {
      createOutputChannel: () => ({ appendLine: (l: string) => logLines.push(l), show: () => executed.push("<show log>"), dispose() {} }),
      createStatusBarItem: () => status,
      showWarningMessage: async (text: string) => void messages.push({ level: "warning", text }),
      showErrorMessage: async (text: string) => void messages.push({ level: "error", text }),
      // The editor with focus; tests move it (`at`) to say where the cursor is.
      activeTextEditor: activeEditor("file:///w/a.py", 1, new Position(3, 4)) as any,
    },
    commands: {
      registerCommand: (name: string, fn: any) => {
        commands.set(name, fn);
        return { dispose() {} };
      },
      executeCommand: async (name: string, ...args: any[]) => {
        executed.push(name);
        return commands.get(name)?.(...args);
      },
    },
    workspace: {
      getConfiguration: () => ({ get: (k: string) => config[k] }),
      onDidChangeConfiguration: (fn: any) => {
        configListeners.push(fn);
        return { dispose() {} };
      },
      onDidCloseTextDocument: () => ({ dispose() {} }),
    },
    languages: {
      registerInlineCompletionItemProvider: (selector: any, provider: any) => {
        const entry = { selector, provider, disposed: false };
        providers.push(entry);
        return { dispose: () => void (entry.disposed = true) };
      },
    },
  };
  const fireConfig = () => configListeners.forEach((fn) => fn({ affectsConfiguration: (s: string) => s === "codedec" }));
  return { api, commands, executed, messages, logLines, providers, status, config, fireConfig };
}

/** A language client double: scripted requests, recorded notifications, fake process death. */
export class FakeClient {
  started = 0;
  stopped = 0;
  requests: { method: string; params: any }[] = [];
  notifications: { method: string; params: any }[] = [];
  handlers = new Map<string, (p: any) => void>();
  answer: (params: any) => Promise<any> = async () => ({ items: [] });
  constructor(readonly spec: any) {}
  async start() { this.started++; }
  async stop() { this.stopped++; }
  sendRequest(method: string, params: any) {
    this.requests.push({ method, params });
    return this.answer(params);
  }
  async sendNotification(method: string, params: any) { this.notifications.push({ method, params }); }
  onNotification(method: string, fn: (p: any) => void) {
    this.handlers.set(method, fn);
    return { dispose: () => this.handlers.delete(method) };
  }
  emit(method: string, params: any) { this.handlers.get(method)?.(params); }
  crash() { this.spec.onClosed(); }
}
