/** core.Extension against a stubbed vscode API and a fake language client. */

import assert from "node:assert/strict";
import { test } from "node:test";
import { COMMANDS, Extension, toAnswer } from "../src/core";
import { activeEditor, FakeClient, makeVscode, Position } from "./stub-vscode";

function setup(config: Record<string, unknown> = {}) {
  const vs = makeVscode(config);
  const clients: FakeClient[] = [];
  const timers: { fn: () => void; ms: number }[] = [];
  let now = 1_000_000;
  const context = { subscriptions: [] as any[] };
  const ext = new Extension(vs.api as any, context as any, (spec) => {
    const c = new FakeClient(spec);
    clients.push(c);
    return c;
  }, { setTimeout: (fn, ms) => timers.push({ fn, ms }), now: () => now });
  return { vs, ext, clients, timers, context, tick: (ms: number) => (now += ms) };
}

/** A document whose every line reads `line` (the provider reads the cursor's line). */
const doc = (version = 1, line = "") => ({ uri: { toString: () => "file:///w/a.py" }, version, lineAt: () => ({ text: line }) });
const token = { isCancellationRequested: false };
const tick = () => new Promise((r) => setImmediate(r));

test("activation: commands, provider for the configured languages, server command and options, status", async () => {
  const { vs, ext, clients } = setup({ model: "tiny-random", languages: ["python", "lua"], maxTokens: 8 });
  await ext.activate();
  for (const c of Object.values(COMMANDS)) assert.ok(vs.commands.has(c), c);
  assert.deepEqual(vs.providers[0].selector, [{ language: "python" }, { language: "lua" }]);
  const spec = clients[0].spec;
  assert.equal(spec.command, "codedec");
  assert.deepEqual(spec.args, ["serve", "--model", "tiny-random"]);
  assert.equal(spec.initializationOptions.maxTokens, 8);
  assert.equal(clients[0].started, 1);
  assert.ok(vs.status.shown && vs.status.text.includes("codedec"));
  clients[0].emit("codedec/status", { state: "loading", message: "loading tiny-random" });
  assert.match(vs.status.text, /loading/);
  clients[0].emit("codedec/status", { state: "ready", message: "model ready in 0.4 s" });
  assert.equal(ext.state.kind, "idle");
});

test("typing while the server starts: when the model is ready, VS Code is asked again at the cursor", async () => {
  const { vs, ext, clients } = setup();
  await ext.activate();
  const c = clients[0];
  c.emit("codedec/status", { state: "loading", message: "loading smollm2" });
  // Before the model was ready the provider got nothing to show; VS Code keeps that answer.
  assert.equal(vs.executed.filter((x) => x.startsWith("editor.action.inlineSuggest.")).length, 0);
  c.emit("codedec/status", { state: "ready", message: "model ready in 9.0 s" });
  await tick();
  await tick();
  const asked = vs.executed.filter((x) => x.startsWith("editor.action.inlineSuggest."));
  assert.deepEqual(asked, ["editor.action.inlineSuggest.hide", "editor.action.inlineSuggest.trigger"]);
});

test("refresh: only where the request was made; a burst of partials collapses", async () => {
  const { vs, ext, clients } = setup();
  await ext.activate();
  const c = clients[0];
  c.emit("codedec/status", { state: "ready", message: "model ready in 0.4 s" });
  c.answer = () => new Promise(() => {});
  const pos = new Position(3, 4);
  void ext.provide(doc() as any, pos as any, {} as any, token as any);
  await tick();
  await tick();
  const before = vs.executed.filter((x) => x.startsWith("editor.action.inlineSuggest.")).length; // the ready re-ask
  const asked = () => vs.executed.filter((x) => x.startsWith("editor.action.inlineSuggest.")).length - before;
  vs.api.window.activeTextEditor = activeEditor("file:///w/a.py", 1, new Position(3, 9)); // the cursor moved on
  c.emit("codedec/partial", { id: 5, uri: "file:///w/a.py", text: "ret" });
  await tick();
  assert.equal(asked(), 0, "hid and re-triggered a suggestion elsewhere");
  vs.api.window.activeTextEditor = activeEditor("file:///w/a.py", 1, pos);
  for (const text of ["retu", "retur", "return", "return x"]) c.emit("codedec/partial", { id: 5, uri: "file:///w/a.py", text });
  for (let i = 0; i < 5; i++) await tick();
  assert.ok(asked() >= 2 && asked() <= 4, `four partials in a burst: ${asked()} commands`);
});

test("inline: ghost text grows with partials without new requests; the answer carries the accept command", async () => {
  const { vs, ext, clients } = setup();
  await ext.activate();
  const c = clients[0];
  c.emit("codedec/status", { state: "ready", message: "model ready in 0.4 s" });
  let finish!: (v: any) => void;
  c.answer = () => new Promise((r) => (finish = r));
  const pos = new Position(3, 4);
  const first = ext.provide(doc() as any, pos as any, {} as any, token as any);
  await tick();
  assert.equal(ext.state.kind, "generating");
  c.emit("codedec/partial", { id: 11, uri: "file:///w/a.py", text: "return" });
  const items1 = await first;
  assert.equal(items1![0].insertText, "return");
  await tick();
  // Asked to re-query, the kept items dropped first (VS Code answers a trigger at the same
  // version and position from them without calling the provider).
  const asked = vs.executed.filter((c) => c.startsWith("editor.action.inlineSuggest."));
  assert.deepEqual(asked.slice(0, 2), ["editor.action.inlineSuggest.hide", "editor.action.inlineSuggest.trigger"]);
  c.emit("codedec/partial", { id: 11, uri: "file:///w/a.py", text: "return a" });
  const items2 = await ext.provide(doc() as any, pos as any, {} as any, token as any);
  assert.equal(items2![0].insertText, "return a");
  assert.equal(c.requests.length, 1); // served from the stream
  assert.deepEqual(c.requests[0].params.position, { line: 3, character: 4 });
  finish({ items: [{ insertText: "return a + b", command: { command: "codedec.accepted",
    arguments: [{ id: 11, uri: "file:///w/a.py", tokens: 4, total_ms: 40 }] } }] });
  await tick();
  const items3 = await ext.provide(doc() as any, pos as any, {} as any, token as any);
  assert.equal(items3![0].insertText, "return a + b");
  assert.match(vs.status.text, /100 tok\/s/);
  // VS Code runs the item's command on accept (Tab): the server hears codedec/accept with the id
  const cmd = items3![0].command as { command: string; arguments: unknown[] };
  await vs.api.commands.executeCommand(cmd.command, ...cmd.arguments);
  assert.deepEqual(c.notifications.at(-1), { method: "codedec/accept",
    params: { id: 11, uri: "file:///w/a.py", tokens: 4, total_ms: 40, kind: "full" } });
  // once per id: running it again (or a later dismissal) reports nothing more
  const n = c.notifications.length;
  await vs.api.commands.executeCommand(cmd.command, ...cmd.arguments);
  assert.equal(c.notifications.length, n);
});

test("inline: typing on replaces the request and reports the shown suggestion rejected; accept word", async () => {
  const { vs, ext, clients } = setup();
  await ext.activate();
  const c = clients[0];
  c.answer = async () => ({ items: [{ insertText: "x = 1", command: { command: "codedec.accepted", arguments: [{ id: 1, uri: "file:///w/a.py" }] } }] });
  await ext.provide(doc(1) as any, new Position(0, 0) as any, {} as any, token as any);
  await tick();
  const shown = await ext.provide(doc(1) as any, new Position(0, 0) as any, {} as any, token as any);
  assert.equal(shown![0].insertText, "x = 1");
  c.answer = async () => ({ items: [{ insertText: "y", command: { command: "codedec.accepted", arguments: [{ id: 2, uri: "file:///w/a.py" }] } }] });
  await ext.provide(doc(2) as any, new Position(0, 1) as any, {} as any, token as any);
  assert.deepEqual(c.notifications[0], { method: "codedec/reject", params: { id: 1, uri: "file:///w/a.py", reason: "superseded" } });
  await tick();
  await vs.api.commands.executeCommand(COMMANDS.acceptWord);
  assert.ok(vs.executed.includes("editor.action.inlineSuggest.acceptNextWord"));
  assert.deepEqual(c.notifications.at(-1), { method: "codedec/accept", params: { id: 2, uri: "file:///w/a.py", kind: "word" } });
});

test("inline: typing the suggestion's first characters shows the rest without a request; typing all of it is an accept", async () => {
  const { ext, clients } = setup();
  await ext.activate();
  const c = clients[0];
  c.answer = async () => ({ items: [{ insertText: "rn x", command: { command: "codedec.accepted", arguments: [{ id: 5, uri: "file:///w/a.py" }] } }] });
  await ext.provide(doc(1, "    retu") as any, new Position(2, 8) as any, {} as any, token as any);
  await tick();
  assert.equal((await ext.provide(doc(1, "    retu") as any, new Position(2, 8) as any, {} as any, token as any))![0].insertText, "rn x");
  const typed = await ext.provide(doc(2, "    retur") as any, new Position(2, 9) as any, {} as any, token as any);
  assert.equal(typed![0].insertText, "n x");
  assert.equal(c.requests.length, 1);
  assert.deepEqual(c.notifications, []); // not a rejection
  // an edit before the request's position: no longer the same suggestion
  c.answer = async () => ({ items: [] });
  await ext.provide(doc(3, "  retur") as any, new Position(2, 7) as any, {} as any, token as any);
  assert.equal(c.requests.length, 2);
  assert.deepEqual(c.notifications.at(-1), { method: "codedec/reject", params: { id: 5, uri: "file:///w/a.py", reason: "superseded" } });
  // the whole suggestion typed out
  c.answer = async () => ({ items: [{ insertText: "ab", command: { command: "codedec.accepted", arguments: [{ id: 6, uri: "file:///w/a.py" }] } }] });
  await ext.provide(doc(4, "x = ") as any, new Position(3, 4) as any, {} as any, token as any);
  await tick();
  await ext.provide(doc(4, "x = ") as any, new Position(3, 4) as any, {} as any, token as any);
  c.answer = async () => ({ items: [] });
  await ext.provide(doc(5, "x = ab") as any, new Position(3, 6) as any, {} as any, token as any);
  assert.deepEqual(c.notifications.at(-1), { method: "codedec/accept", params: { id: 6, uri: "file:///w/a.py", kind: "typed" } });
  assert.equal(c.requests.length, 4); // and a new request at the new position
});

test("a request made while the model loads keeps the loading display", async () => {
  const { ext, clients } = setup();
  await ext.activate();
  const c = clients[0];
  c.emit("codedec/status", { state: "loading", message: "loading tiny-random" });
  c.answer = async () => ({ items: [] });
  await ext.provide(doc() as any, new Position(0, 0) as any, {} as any, token as any);
  assert.equal(ext.state.kind, "loading");
  await tick();
  assert.equal(ext.state.kind, "loading");
});

test("serverPath: found on PATH / in a workspace .venv, or a clear error and no process", async () => {
  const vs = makeVscode({});
  const clients: FakeClient[] = [];
  const ext = new Extension(vs.api as any, { subscriptions: [] } as any, (spec) => {
    const c = new FakeClient(spec);
    clients.push(c);
    return c;
  }, { setTimeout: () => {}, now: () => 0, locate: (name) => ({ error: `cannot find "${name}" on PATH` }) });
  await ext.activate();
  assert.equal(clients.length, 0);
  assert.equal(ext.state.kind, "error");
  assert.match(vs.messages.at(-1)!.text, /cannot find "codedec" on PATH/);
  const ext2 = new Extension(vs.api as any, { subscriptions: [] } as any, (spec) => {
    const c = new FakeClient(spec);
    clients.push(c);
    return c;
  }, { setTimeout: () => {}, now: () => 0, locate: () => ({ path: "/opt/codedec/bin/codedec" }) });
  await ext2.activate();
  assert.equal(clients[0].spec.command, "/opt/codedec/bin/codedec");
});

test("toggle turns completions off and on; restart starts a new client", async () => {
  const { vs, ext, clients } = setup();
  await ext.activate();
  clients[0].emit("codedec/status", { state: "ready", message: "model ready in 0.4 s" });
  await vs.api.commands.executeCommand(COMMANDS.toggle);
  assert.equal(ext.state.kind, "disabled");
  assert.equal(await ext.provide(doc() as any, new Position(0, 0) as any, {} as any, token as any), undefined);
  await vs.api.commands.executeCommand(COMMANDS.toggle);
  assert.equal(ext.state.kind, "idle");
  await vs.api.commands.executeCommand(COMMANDS.restart);
  assert.equal(clients[0].stopped, 1);
  assert.equal(clients.length, 2);
  assert.equal(clients[1].started, 1);
  await vs.api.commands.executeCommand(COMMANDS.showLog);
  assert.ok(vs.executed.includes("<show log>"));
});

test("a dead server: one warning, restarts with backoff, gives up after repeated crashes", async () => {
  const { vs, ext, clients, timers } = setup();
  await ext.activate();
  for (let i = 0; i < 5; i++) {
    clients.at(-1)!.crash();
    assert.equal(timers.length, i + 1);
    assert.equal(timers[i].ms, 1000 * 2 ** i);
    assert.equal(ext.state.kind, "error");
    timers[i].fn();
    await tick();
    assert.equal(clients.length, i + 2);
  }
  assert.deepEqual(vs.messages.map((m) => m.level), ["warning"]); // said once
  clients.at(-1)!.crash(); // the sixth crash in the window
  assert.equal(timers.length, 5);
  assert.deepEqual(vs.messages.map((m) => m.level), ["warning", "error"]);
  assert.match(ext.state.kind, /error/);
  // a stop we asked for is not a crash
  const n = clients.length;
  await ext.restart(true);
  clients[n - 1].crash();
  assert.equal(timers.length, 5);
});

test("configuration changes: options are sent; a new model restarts the server; bad values fall back", async () => {
  const { vs, ext, clients } = setup({ maxTokens: 8 });
  await ext.activate();
  vs.config.maxTokens = 20;
  vs.fireConfig();
  await tick();
  assert.equal(clients.length, 1);
  const sent = clients[0].notifications.at(-1)!;
  assert.equal(sent.method, "workspace/didChangeConfiguration");
  assert.equal(sent.params.settings.codedec.maxTokens, 20);
  vs.config.model = "deepseek-coder";
  vs.fireConfig();
  await tick();
  await tick();
  assert.equal(clients.length, 2);
  assert.deepEqual(clients[1].spec.args, ["serve", "--model", "deepseek-coder"]);
  vs.config.maxTokens = -3;
  vs.fireConfig();
  await tick();
  assert.match(vs.messages.at(-1)!.text, /codedec.maxTokens must be an integer >= 1, got -3; using the defaults/);
});

test("toAnswer reads both result shapes", () => {
  assert.deepEqual(toAnswer(null), { text: "" });
  assert.deepEqual(toAnswer([{ insertText: "a" }]), { text: "a", args: undefined });
  assert.deepEqual(toAnswer({ items: [{ insertText: { value: "b" } }] }), { text: "b", args: undefined });
});
