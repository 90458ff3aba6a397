/**
 * The whole extension (core.Extension with a stubbed `vscode` API) against the real server: the
 * server command built from the settings (`codedec.serverPath` = ../.venv/bin/codedec, tiny random
 * model), the status bar through loading to idle, streamed ghost text from the provider, the
 * item's accept command and a superseded suggestion reaching the telemetry log, a killed server
 * restarted with one warning, and a clean stop (the server exits with status 0).
 *
 * Only `ConnectionClient` (test/connection-client.ts) stands in for vscode-languageclient's
 * LanguageClient. Needs the project's virtual environment (`make install`).
 */

import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { after, test } from "node:test";
import { Extension, REAL_DEPS } from "../src/core";
import { ConnectionClient } from "./connection-client";
import { activeEditor, makeVscode, Position } from "./stub-vscode";

const ROOT = path.resolve(__dirname, "..", "..", "..");
const CODEDEC = process.env.CODEDEC_EXE ?? path.join(ROOT, ".venv", "bin", "codedec");
const URI = "file:///work/b.py";
const LINES = ["import os", "", "", "def main():", "    x = 1", ""];

const telemetry = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "codedec-vscode-ext-")), "events.jsonl");
const vs = makeVscode({
  serverPath: CODEDEC,
  serverArgs: ["--telemetry", telemetry],
  model: "tiny-random",
  maxTokens: 16,
  timeBudgetMs: 10000,
  debounceMs: 0,
  languages: ["python"],
});
const clients: ConnectionClient[] = [];
const restarts: number[] = [];
const ext = new Extension(vs.api as any, { subscriptions: [] } as any, (spec) => {
  const c = new ConnectionClient(spec, { ...process.env, HF_HUB_OFFLINE: "1", TRANSFORMERS_VERBOSITY: "error" });
  clients.push(c);
  return c;
}, {
  ...REAL_DEPS,
  setTimeout: (fn, ms) => {
    restarts.push(ms); // the backoff delay; restart at once to keep the test short
    setTimeout(fn, 0);
  },
});

const doc = (version: number) => ({ uri: { toString: () => URI }, version, lineAt: (n: number) => ({ text: LINES[n] ?? "" }) });
const token = { isCancellationRequested: false };

async function until(what: string, cond: () => boolean, ms = 30000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) {
      throw new Error(`timed out waiting for ${what}; state ${JSON.stringify(ext.state)}; server stderr:\n${clients.at(-1)?.stderr.slice(-2000)}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

function events(): any[] {
  if (!fs.existsSync(telemetry)) return [];
  return fs.readFileSync(telemetry, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l));
}

after(async () => {
  await ext.stop();
  fs.rmSync(path.dirname(telemetry), { recursive: true, force: true });
});

test("start: the settings' server command; the status bar goes through loading to idle", async () => {
  await ext.activate();
  assert.deepEqual(clients[0].spec.args, ["serve", "--model", "tiny-random", "--telemetry", telemetry]);
  assert.equal(clients[0].spec.initializationOptions.maxTokens, 16);
  await until("the model to load", () => ext.state.kind === "idle");
  assert.ok(vs.logLines.some((l) => /loading/.test(l)), "the server's loading messages are logged");
  assert.match(vs.status.text, /codedec/);
  await clients[0].open(URI, LINES.join("\n"));
});

test("ghost text: streamed, refreshed per partial, then the final item with its accept command", async () => {
  const triggers = () => vs.executed.filter((c) => c === "editor.action.inlineSuggest.trigger").length;
  const before = triggers();
  const pos = new Position(5, 0);
  vs.api.window.activeTextEditor = activeEditor(URI, 1, pos);
  const first = await ext.provide(doc(1) as any, pos as any, {} as any, token as any);
  assert.ok(first === undefined || Array.isArray(first));
  await until("the answer", () => !ext.session.busy(URI));
  assert.ok(triggers() - before >= 2, "asked VS Code to re-query on a partial and on the answer");
  const items = await ext.provide(doc(1) as any, pos as any, {} as any, token as any);
  assert.equal(items!.length, 1, "a suggestion");
  const item = items![0];
  assert.ok(typeof item.insertText === "string" && item.insertText.length > 0);
  assert.match(vs.status.text, /ms/, `idle with the latency: ${vs.status.text}`);
  const cmd = item.command as { command: string; arguments: any[] };
  assert.equal(cmd.command, "codedec.accepted");
  assert.ok(typeof cmd.arguments[0].tokens === "number");
  await vs.api.commands.executeCommand(cmd.command, ...cmd.arguments);
  await until("the accept event", () => events().some((e) => e.event === "accept" && e.id === cmd.arguments[0].id && e.kind === "full"));
});

test("a shown suggestion superseded by a new request is reported rejected", async () => {
  const pos = new Position(5, 0);
  await ext.provide(doc(2) as any, pos as any, {} as any, token as any);
  await until("the answer", () => !ext.session.busy(URI));
  const shown = await ext.provide(doc(2) as any, pos as any, {} as any, token as any);
  assert.equal(shown!.length, 1);
  const id = (shown![0].command as any).arguments[0].id;
  await ext.provide(doc(3) as any, new Position(4, 9) as any, {} as any, token as any);
  await until("the reject event", () => events().some((e) => e.event === "reject" && e.id === id));
  await until("the answer", () => !ext.session.busy(URI));
});

test("a killed server: one warning, restarted (1 s backoff), works again; stop ends it with status 0", async () => {
  const n = vs.messages.length;
  clients[0].proc!.kill("SIGKILL");
  await until("the restart", () => clients.length === 2);
  assert.deepEqual(restarts, [1000]);
  assert.deepEqual(vs.messages.slice(n).map((m) => m.level), ["warning"]);
  await until("the model to load again", () => ext.state.kind === "idle");
  await clients[1].open(URI, LINES.join("\n"));
  await ext.provide(doc(1) as any, new Position(5, 0) as any, {} as any, token as any);
  await until("the answer", () => !ext.session.busy(URI));
  assert.equal((await ext.provide(doc(1) as any, new Position(5, 0) as any, {} as any, token as any))!.length, 1);
  await ext.stop();
  assert.equal(await clients[1].exited, 0);
  assert.equal(vs.messages.length, n + 1, "a stop we asked for is not a crash");
  assert.equal(clients.length, 2);
});
