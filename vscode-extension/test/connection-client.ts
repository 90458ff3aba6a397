/**
 * A `ClientLike` (what core.Extension needs of vscode-languageclient's LanguageClient) built on
 * the same JSON-RPC stack (vscode-jsonrpc, via vscode-languageserver-protocol) over the process's stdio, for tests
 * that run the extension against the real server outside VS Code.
 *
 * Like LanguageClient with the extension's options: `start` spawns `spec.command spec.args`,
 * sends `initialize` with `spec.initializationOptions` and `initialized`; notification handlers
 * may be registered before `start`; the server's log messages go to `spec.output`; the process
 * exiting when we did not `stop` it calls `spec.onClosed` (and nothing restarts it). What it does
 * not do: document sync (LanguageClient sends didOpen itself; tests call `open`).
 */

import { ChildProcess, spawn } from "node:child_process";
import * as os from "node:os";
import {
  CancellationToken,
  createMessageConnection,
  MessageConnection,
  StreamMessageReader,
  StreamMessageWriter,
} from "vscode-languageserver-protocol/node";
import type { ClientLike, ClientSpec } from "../src/core";

export class ConnectionClient implements ClientLike {
  proc: ChildProcess | undefined;
  conn: MessageConnection | undefined;
  stderr = "";
  exitCode: number | null = null;
  readonly exited: Promise<number | null>;
  private markExited!: (code: number | null) => void;
  private handlers = new Map<string, Set<(params: any) => void>>();
  private stopping = false;

  constructor(readonly spec: ClientSpec, private readonly env: NodeJS.ProcessEnv = process.env) {
    this.exited = new Promise((r) => (this.markExited = r));
  }

  async start(): Promise<void> {
    const proc = spawn(this.spec.command, this.spec.args, { cwd: os.tmpdir(), env: this.env });
    this.proc = proc;
    proc.stderr!.on("data", (d) => (this.stderr += d.toString()));
    proc.on("exit", (code) => {
      this.exitCode = code;
      this.markExited(code);
      if (!this.stopping) this.spec.onClosed();
    });
    const spawned = new Promise<void>((resolve, reject) => {
      proc.once("spawn", resolve);
      proc.once("error", reject);
    });
    await spawned;
    const conn = createMessageConnection(new StreamMessageReader(proc.stdout!), new StreamMessageWriter(proc.stdin!));
    this.conn = conn;
    conn.onNotification((method: string, params: any) => {
      if (method === "window/logMessage") this.spec.output.appendLine(params.message);
      this.handlers.get(method)?.forEach((fn) => fn(params));
    });
    conn.onRequest("window/workDoneProgress/create", () => null);
    conn.onError(() => {});
    conn.onClose(() => {});
    conn.listen();
    await conn.sendRequest("initialize", {
      processId: process.pid,
      rootUri: null,
      capabilities: { window: { workDoneProgress: true }, textDocument: { inlineCompletion: {} } },
      initializationOptions: this.spec.initializationOptions,
    });
    await conn.sendNotification("initialized", {});
  }

  /** shutdown + exit, as LanguageClient.stop does; waits (at most 5 s) for the process to end. */
  async stop(): Promise<void> {
    this.stopping = true;
    const conn = this.conn;
    if (conn && this.exitCode === null) {
      try {
        await Promise.race([conn.sendRequest("shutdown"), new Promise((r) => setTimeout(r, 5000))]);
        await conn.sendNotification("exit");
      } catch {
        // the process is gone already
      }
    }
    await Promise.race([this.exited, new Promise((r) => setTimeout(r, 5000))]);
    if (this.exitCode === null) this.proc?.kill("SIGKILL");
    conn?.dispose();
  }

  sendRequest<R>(method: string, params: unknown, token?: CancellationToken): Promise<R> {
    if (!this.conn) return Promise.reject(new Error("not started"));
    // (an undefined token passed on would be sent as a second positional parameter)
    return (token ? this.conn.sendRequest(method, params, token) : this.conn.sendRequest(method, params)) as Promise<R>;
  }

  async sendNotification(method: string, params?: unknown): Promise<void> {
    await this.conn?.sendNotification(method, params);
  }

  onNotification(method: string, handler: (params: any) => void) {
    const set = this.handlers.get(method) ?? new Set();
    set.add(handler);
    this.handlers.set(method, set);
    return { dispose: () => void set.delete(handler) };
  }

  /** textDocument/didOpen (LanguageClient's document sync does this in VS Code). */
  async open(uri: string, text: string, version = 1, languageId = "python"): Promise<void> {
    await this.sendNotification("textDocument/didOpen", { textDocument: { uri, languageId, version, text } });
  }
}
