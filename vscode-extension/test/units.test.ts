/** Pure modules: settings, restart policy, status rendering, the streaming session. */

import assert from "node:assert/strict";
import { test } from "node:test";
import { RestartPolicy } from "../src/restart";
import { InlineSession } from "../src/session";
import { DEFAULTS, needsRestart, readSettings, serverCommand, serverOptions } from "../src/settings";
import { render } from "../src/status";

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
  assert.deepEqual(rejects, [{ id: 7, uri: "file:///a.py" }]);
  assert.ok(s.busy("file:///a.py"));
});

test("session: accept reports the id once; accepted suggestions are not rejected", async () => {
  const rejects: unknown[] = [];
  const s = new InlineSession({ onUpdate: () => {}, onReject: (a) => rejects.push(a) });
  await s.start("u", "k", async () => ({ text: "x", args: { id: 3, uri: "u", tokens: 1 } }));
  s.markShown("u", "k");
  assert.deepEqual(s.accept("u", "word"), { id: 3, uri: "u", tokens: 1, partial: "word" });
  assert.deepEqual(s.accept("u"), { id: 3, uri: "u", tokens: 1 });
  s.forget("u");
  assert.deepEqual(rejects, []);
  assert.equal(s.accept("u"), undefined);
});

test("session: a failed request shows nothing and does not throw", async () => {
  const finished: unknown[] = [];
  const s = new InlineSession({ onUpdate: () => {}, onReject: () => {}, onFinished: (_u, _ms, a, e) => finished.push([a, e]) });
  await s.start("u", "k", async () => { throw new Error("server gone"); });
  await new Promise((r) => setImmediate(r));
  assert.equal(s.current("u", "k")!.text, "");
  assert.equal((finished[0] as any)[1].message, "server gone");
});
