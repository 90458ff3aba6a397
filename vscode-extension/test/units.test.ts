/** Pure modules: settings, restart policy, status rendering, the streaming session. */

import assert from "node:assert/strict";
import { test } from "node:test";
import { RestartPolicy } from "../src/restart";
import { InlineSession } from "../src/session";
import { DEFAULTS, needsRestart, readSettings, serverCommand, serverOptions } from "../src/settings";
import { locateServer } from "../src/locate";
import { render, StatusMachine } from "../src/status";

test("settings: defaults, overrides, clear errors, server command", () => {
  assert.deepEqual(readSettings(() => undefined), DEFAULTS);
  const s = readSettings((k) => ({ model: "tiny-random", decoding: ["grammar", "rpg"], maxTokens: 12 } as any)[k]);
  assert.equal(s.model, "tiny-random");
  assert.deepEqual(serverOptions(s), {
    model: "tiny-random", decoding: ["grammar", "rpg"], maxTokens: 12, debounceMs: 100, timeBudgetMs: 2000,
    languages: DEFAULTS.languages, lineMode: "auto",
  });
  assert.deepEqual(serverCommand(s), { command: "codedec", args: ["serve", "--model", "tiny-random"] });
  assert.throws(() => readSettings((k) => (k === "maxTokens" ? 0 : undefined)), /codedec.maxTokens must be an integer >= 1/);
  assert.throws(() => readSettings((k) => (k === "decoding" ? ["beam"] : undefined)), /codedec.decoding/);
  assert.throws(() => readSettings((k) => (k === "lineMode" ? "both" : undefined)), /auto \| single \| multi/);
  assert.ok(needsRestart(DEFAULTS, { ...DEFAULTS, model: "deepseek-coder" }));
  assert.ok(!needsRestart(DEFAULTS, { ...DEFAULTS, maxTokens: 9 }));
});

test("restart policy: exponential backoff, one message per burst, gives up", () => {
  const p = new RestartPolicy(1000, 30000, 3, 60000);
  assert.deepEqual(p.onCrash(0), { restart: true, delayMs: 1000, firstInBurst: true });
  assert.deepEqual(p.onCrash(10), { restart: true, delayMs: 2000, firstInBurst: false });
  assert.deepEqual(p.onCrash(20), { restart: true, delayMs: 4000, firstInBurst: false });
  assert.equal(p.onCrash(30).restart, false);
  assert.deepEqual(p.onCrash(100000), { restart: true, delayMs: 1000, firstInBurst: true }); // quiet period over
});

test("status: every state renders; idle shows latency and tokens/s", () => {
  for (const s of [{ kind: "starting" }, { kind: "loading", message: "loading smollm2" }, { kind: "generating" },
    { kind: "disabled" }, { kind: "error", message: "boom" }, { kind: "idle" }] as const) {
    assert.ok(render(s, "m").text.includes("codedec"));
  }
  const idle = render({ kind: "idle", latencyMs: 123.4, tokensPerS: 45.6 }, "smollm2");
  assert.match(idle.text, /123 ms · 46 tok\/s/);
  assert.match(render({ kind: "error", message: "boom" }, "m").tooltip, /boom.*log/);
});

function deferred<T>() {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

test("session: partials grow the text, the answer replaces it, stale partials are ignored", async () => {
  const updates: string[] = [];
  const rejects: unknown[] = [];
  const s = new InlineSession({ onUpdate: (u) => updates.push(u), onReject: (a) => rejects.push(a) });
  const answer = deferred<any>();
  const first = s.start("file:///a.py", "1:0:4", () => answer.promise);
  s.onPartial({ id: 7, uri: "file:///a.py", text: "ret" });
  await first; // resolved by the first partial, before the answer
  assert.deepEqual(s.current("file:///a.py", "1:0:4"), { text: "ret", id: 7, done: false, args: undefined });
  assert.equal(s.current("file:///a.py", "2:0:5"), undefined); // another cursor: no answer from here
  s.onPartial({ id: 7, uri: "file:///a.py", text: "return x" });
  s.onPartial({ id: 6, uri: "file:///a.py", text: "stale" }); // an older request's partial
  assert.equal(s.current("file:///a.py", "1:0:4")!.text, "return x");
  s.markShown("file:///a.py", "1:0:4");
  answer.resolve({ text: "return x + 1", args: { id: 7, uri: "file:///a.py", tokens: 5, total_ms: 50 } });
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(s.current("file:///a.py", "1:0:4"), {
    text: "return x + 1", id: 7, done: true, args: { id: 7, uri: "file:///a.py", tokens: 5, total_ms: 50 } });
  assert.equal(updates.length, 3);
  // a new request for the document: the shown, unaccepted suggestion is reported rejected
  s.start("file:///a.py", "2:0:5", () => new Promise(() => {}), 10);
  assert.deepEqual(rejects, [{ id: 7, uri: "file:///a.py", reason: "superseded" }]);
  assert.ok(s.busy("file:///a.py"));
});

test("session: accept reports the id once; accepted suggestions are not rejected", async () => {
  const rejects: unknown[] = [];
  const s = new InlineSession({ onUpdate: () => {}, onReject: (a) => rejects.push(a) });
  await s.start("u", "k", async () => ({ text: "x", args: { id: 3, uri: "u", tokens: 1 } }));
  s.markShown("u", "k");
  assert.deepEqual(s.accept("u", "word"), { id: 3, uri: "u", tokens: 1, kind: "word" });
  assert.equal(s.accept("u"), undefined); // the id was reported already
  s.forget("u");
  assert.deepEqual(rejects, []);
  assert.equal(s.accept("u"), undefined);
  // an item's own arguments name its id even when the document moved on
  assert.deepEqual(s.accept("u", "full", { id: 4, uri: "u", total_ms: 9 }), { id: 4, uri: "u", total_ms: 9, kind: "full" });
  // a new connection: ids start over
  s.reset();
  assert.deepEqual(s.accept("u", "full", { id: 3, uri: "u" }), { id: 3, uri: "u", kind: "full" });
});

test("session: type-ahead continues a suggestion, a divergence does not, the whole of it is an accept", async () => {
  const rejects: unknown[] = [];
  const s = new InlineSession({ onUpdate: () => {}, onReject: (a) => rejects.push(a) });
  const answer = deferred<any>();
  const anchor = { line: 0, character: 4, before: "x = " };
  void s.start("u", "1:0:4", () => answer.promise, 10, anchor);
  s.onPartial({ id: 1, uri: "u", text: "foo(" });
  s.markShown("u", "1:0:4");
  assert.deepEqual(s.anchor("u"), anchor);
  assert.deepEqual(s.typeAhead("u", "2:0:6", "fo"), { result: "continue" });
  assert.equal(s.current("u", "2:0:6")!.text, "o(");
  s.onPartial({ id: 1, uri: "u", text: "foo(a)" });
  assert.equal(s.current("u", "2:0:6")!.text, "o(a)"); // the stream keeps growing the rest
  assert.deepEqual(s.typeAhead("u", "3:0:6", "fx"), { result: "diverged" });
  answer.resolve({ text: "foo(a)", args: { id: 1, uri: "u" } });
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(s.typeAhead("u", "4:0:10", "foo(a)"), { result: "accepted", report: { id: 1, uri: "u", kind: "typed" } });
  assert.equal(s.anchor("u"), undefined);
  assert.deepEqual(rejects, []);
});

test("status machine: loading -> idle <-> generating, loading kept during early requests, disabled, error", () => {
  const shown: string[] = [];
  const m = new StatusMachine((s) => shown.push(s.kind));
  const kind = (): string => m.shown.kind; // (a getter: no type narrowing between calls)
  m.loading("loading smollm2");
  m.generating(); // a request while loading: still loading
  assert.equal(kind(), "loading");
  m.ready();
  m.generating();
  assert.equal(kind(), "generating");
  m.finished(120, 50);
  assert.deepEqual(m.shown, { kind: "idle", latencyMs: 120, tokensPerS: 50 });
  m.setEnabled(false);
  assert.equal(kind(), "disabled");
  m.generating();
  assert.equal(kind(), "disabled");
  m.setEnabled(true);
  assert.equal(kind(), "generating"); // the server's state again
  m.error("boom");
  m.setEnabled(false);
  assert.equal(kind(), "error"); // an error shows even when off
  m.finished(1);
  assert.equal(m.serverState.kind, "error");
  m.starting();
  assert.equal(m.serverState.kind, "starting");
  assert.deepEqual(shown.slice(0, 4), ["loading", "idle", "generating", "idle"]); // no change, no event
});

test("locate: a path is checked, a bare name is searched on PATH then in workspace .venv dirs", () => {
  const files = new Set(["/usr/bin/codedec", "/w/.venv/bin/codedec", "/abs/codedec"]);
  const env = (PATH: string, workspaceDirs: string[] = []) =>
    ({ PATH, platform: "linux", workspaceDirs, isExecutable: (f: string) => files.has(f) });
  assert.deepEqual(locateServer("codedec", env("/opt/bin:/usr/bin")), { path: "/usr/bin/codedec" });
  assert.deepEqual(locateServer("codedec", env("/opt/bin", ["/x", "/w"])), { path: "/w/.venv/bin/codedec" });
  assert.deepEqual(locateServer("/abs/codedec", env("")), { path: "/abs/codedec" });
  const missing = locateServer("codedec", env("/opt/bin", ["/x"]));
  assert.ok("error" in missing && /cannot find "codedec" on PATH or in \/x\/.venv\/bin.*codedec.serverPath/.test(missing.error));
  const bad = locateServer("/nope/codedec", env("/usr/bin"));
  assert.ok("error" in bad && /codedec.serverPath "\/nope\/codedec" is not an executable file/.test(bad.error));
  const win = { PATH: "C:\\py\\Scripts", PATHEXT: ".EXE", platform: "win32", workspaceDirs: [],
    isExecutable: (f: string) => f === "C:\\py\\Scripts\\codedec.EXE" };
  assert.deepEqual(locateServer("codedec", win), { path: "C:\\py\\Scripts\\codedec.EXE" });
});

test("session: a failed request shows nothing and does not throw", async () => {
  const finished: unknown[] = [];
  const s = new InlineSession({ onUpdate: () => {}, onReject: () => {}, onFinished: (_u, _ms, a, e) => finished.push([a, e]) });
  await s.start("u", "k", async () => { throw new Error("server gone"); });
  await new Promise((r) => setImmediate(r));
  assert.equal(s.current("u", "k")!.text, "");
  assert.equal((finished[0] as any)[1].message, "server gone");
});
