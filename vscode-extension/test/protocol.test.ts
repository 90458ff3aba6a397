/**
 * The extension's client-side logic against the real Python server (tiny random model), over the
 * JSON-RPC stack vscode-languageclient is built on (vscode-languageserver-protocol): initialize,
 * status notifications, didOpen, inline completion with streamed `codedec/partial`s driven through
 * `InlineSession`, cancellation, and `codedec/accept` reaching the server's telemetry log.
 *
 * Needs the project's virtual environment (`make install`): ../.venv/bin/python, or $CODEDEC_PYTHON.
 */

import assert from "node:assert/strict";
import { ChildProcess, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { after, before, test } from "node:test";
import {
  CancellationTokenSource,
  createProtocolConnection,
  ProtocolConnection,
  ResponseError,
  StreamMessageReader,
  StreamMessageWriter,
} from "vscode-languageserver-protocol/node";
import { toAnswer } from "../src/core";
import { InlineSession, PartialNote } from "../src/session";

const ROOT = path.resolve(__dirname, "..", "..", "..");
const PYTHON = process.env.CODEDEC_PYTHON ?? path.join(ROOT, ".venv", "bin", "python");
const SOURCE = "import os\n\n\ndef main():\n    x = 1\n";
const URI = "file:///work/a.py";

let proc: ChildProcess;
let conn: ProtocolConnection;
let telemetry: string;
let stderr = "";
const partials: PartialNote[] = [];
const statuses: { state: string; message: string }[] = [];

async function until(what: string, cond: () => boolean, ms = 30000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}; server stderr:\n${stderr.slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

before(async () => {
  assert.ok(fs.existsSync(PYTHON), `${PYTHON} is missing: run \`make install\` first`);
  telemetry = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "codedec-vscode-")), "events.jsonl");
  proc = spawn(PYTHON, ["-m", "lsp_server", "--model", "tiny-random", "--telemetry", telemetry], {
    cwd: ROOT,
    env: { ...process.env, HF_HUB_OFFLINE: "1", TRANSFORMERS_VERBOSITY: "error" },
  });
  proc.stderr!.on("data", (d) => (stderr += d.toString()));
  conn = createProtocolConnection(new StreamMessageReader(proc.stdout!), new StreamMessageWriter(proc.stdin!));
  conn.onNotification("codedec/partial", (p: PartialNote) => partials.push(p));
  conn.onNotification("codedec/status", (p: { state: string; message: string }) => statuses.push(p));
  conn.onRequest("window/workDoneProgress/create", () => null);
  conn.onNotification("$/progress", () => {});
  conn.onNotification("window/logMessage", () => {});
  conn.listen();
  const init: any = await conn.sendRequest("initialize", {
    processId: process.pid,
    rootUri: null,
    capabilities: { window: { workDoneProgress: true }, textDocument: { inlineCompletion: {} } },
    initializationOptions: { model: "tiny-random", maxTokens: 16, timeBudgetMs: 10000, debounceMs: 0 },
  });
  assert.ok(init.capabilities.inlineCompletionProvider, "the server offers inline completion");
  assert.equal(init.serverInfo.name, "codedec");
  await conn.sendNotification("initialized", {});
  await until("the model to load", () => statuses.some((s) => s.state === "ready"), 90000);
  await conn.sendNotification("textDocument/didOpen", {
    textDocument: { uri: URI, languageId: "python", version: 1, text: SOURCE },
  });
});

after(async () => {
  if (proc.exitCode !== null) {
    conn.dispose(); // the last test ended it
    fs.rmSync(path.dirname(telemetry), { recursive: true, force: true });
    return;
  }
  try {
    await Promise.race([conn.sendRequest("shutdown"), new Promise((r) => setTimeout(r, 5000))]);
    await conn.sendNotification("exit");
  } catch {
    // already gone
  }
  const exited = new Promise((r) => proc.once("exit", r));
  await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
  if (proc.exitCode === null) proc.kill("SIGKILL");
  conn.dispose();
  fs.rmSync(path.dirname(telemetry), { recursive: true, force: true });
});

test("status notifications: loading, then ready", () => {
  assert.equal(statuses[0].state, "loading");
  assert.equal(statuses.at(-1)!.state, "ready");
});

test("inline completion streams partials that InlineSession shows growing, then the final item", async () => {
  const updates: string[] = [];
  const session = new InlineSession({ onUpdate: (u) => updates.push(u), onReject: () => {} });
  conn.onNotification("codedec/partial", (p: PartialNote) => {
    partials.push(p);
    session.onPartial(p);
  });
  const position = { line: 5, character: 0 };
  const key = `1:${position.line}:${position.character}`;
  await session.start(URI, key, () =>
    conn.sendRequest("textDocument/inlineCompletion", {
      textDocument: { uri: URI }, position, context: { triggerKind: 2 },
    }).then((r: any) => toAnswer(r)));
  await until("the final answer", () => session.current(URI, key)!.done);
  const shown = session.current(URI, key)!;
  assert.ok(shown.text.length > 0, "a suggestion");
  assert.ok(shown.args && shown.args.uri === URI && (shown.args.tokens as number) >= 1);
  const mine = partials.filter((p) => p.id === shown.args!.id);
  assert.ok(mine.length >= 1, "partials carry the request id of the final item");
  for (let i = 1; i < mine.length; i++) assert.ok(mine[i].text.startsWith(mine[i - 1].text), "text so far, growing");
  assert.ok(updates.length >= 2, "a refresh per partial and one for the answer");

  // codedec/accept with the item's arguments reaches the server's telemetry log
  await conn.sendNotification("codedec/accept", shown.args);
  await until("the accept event", () =>
    fs.existsSync(telemetry) && fs.readFileSync(telemetry, "utf8").split("\n").filter(Boolean)
      .map((l) => JSON.parse(l)).some((e) => e.event === "accept" && e.id === shown.args!.id));
});

test("a cancelled request stops the generation promptly", async () => {
  await conn.sendNotification("workspace/didChangeConfiguration", { settings: { codedec: { maxTokens: 3000, timeBudgetMs: 0 } } });
  await conn.sendNotification("textDocument/didChange", {
    textDocument: { uri: URI, version: 2 },
    contentChanges: [{ range: { start: { line: 5, character: 0 }, end: { line: 5, character: 0 } }, text: "def g():\n    " }],
  });
  const source = new CancellationTokenSource();
  const before = partials.length;
  const request = conn.sendRequest("textDocument/inlineCompletion", {
    textDocument: { uri: URI }, position: { line: 6, character: 4 }, context: { triggerKind: 2 },
  }, source.token);
  await until("a first partial", () => partials.length > before);
  const t0 = Date.now();
  source.cancel();
  await assert.rejects(request, (err: unknown) => err instanceof ResponseError && err.code === -32800);
  assert.ok(Date.now() - t0 < 5000, "answered within 5 s of the cancel");
  const n = partials.length;
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(partials.length, n, "no partials after the cancel");
  await conn.sendNotification("workspace/didChangeConfiguration", { settings: { codedec: { maxTokens: 16, timeBudgetMs: 10000 } } });
});

test("shutdown, then exit: the server ends with status 0", async () => {
  const exited = new Promise<number | null>((r) => proc.once("exit", (code) => r(code)));
  await conn.sendRequest("shutdown");
  await conn.sendNotification("exit");
  const code = await Promise.race([exited, new Promise<string>((r) => setTimeout(() => r("still running after 5 s"), 5000))]);
  assert.equal(code, 0);
});
