/**
 * The VS Code extension inside a real VS Code: the packaged .vsix installed into code-server,
 * a Python file opened and typed in headless Chromium, ghost text read from the editor's DOM,
 * the file read back from disk after Ctrl+S. One editor session, checks in the order a user
 * meets them (each step depends on the previous one):
 *
 *   typing while the server starts still yields a suggestion; the status bar goes loading ->
 *   ready; ghost text grows while tokens stream; Tab accepts; accept-word and accept-line;
 *   Escape dismisses; a server killed mid-session restarts and completions resume; every
 *   process the test started is gone at the end.
 *
 * Screenshots of the key moments: $CODEDEC_E2E_OUT (default <repo>/build/vscode-e2e).
 * Run by `make test` after the extension's own tests (they build the .vsix).
 */

import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { processesMentioning, sleep, startEditor, waitFor } from "./harness.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, "..", "..");
const VSIX = process.env.CODEDEC_E2E_VSIX || path.join(REPO, "vscode-extension", "codedec-0.1.0.vsix");
const SHOTS = process.env.CODEDEC_E2E_OUT || path.join(REPO, "build", "vscode-e2e");
const SERVER = path.join(REPO, ".venv", "bin", "codedec");

const FILE = "shapes.py";
const SOURCE = `import math


class Circle:
    def __init__(self, radius):
        self.radius = radius

    def area(self):
        return math.pi * self.radius ** 2
`;

let editor;
let telemetry;

/** Wait until the ghost text stops changing for `quietMs` (the answer is final); return it. */
async function settledGhost(what, timeoutMs = 60000, quietMs = 1500) {
  let last = null;
  let since = Date.now();
  return waitFor(what, async () => {
    const g = await editor.ghost();
    if (g !== last) {
      last = g;
      since = Date.now();
    }
    return g && Date.now() - since >= quietMs ? g : null;
  }, timeoutMs, 50);
}

/** Record every distinct ghost text until it settles: [distinct values in order, final]. */
async function watchGhost(timeoutMs = 60000, quietMs = 1500) {
  const seen = [];
  let since = Date.now();
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const g = await editor.ghost();
    if (g && g !== seen[seen.length - 1]) {
      seen.push(g);
      since = Date.now();
    } else if (seen.length && Date.now() - since >= quietMs) {
      return seen;
    }
    await sleep(25);
  }
  throw new Error(`the ghost text did not settle in ${timeoutMs} ms; seen: ${JSON.stringify(seen)}`);
}

/** The last completion the server answered with text (telemetry): {id, chars, ...}. */
function lastAnswer() {
  if (!fs.existsSync(telemetry)) return undefined;
  return fs.readFileSync(telemetry, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l))
    .filter((e) => e.event === "completion" && e.finish_reason !== "cancelled" && e.chars > 0).pop();
}

/** The ghost text shows the whole final answer (not a partial it stopped at). */
function assertWhole(ghost) {
  const answer = lastAnswer();
  assert.ok(answer, "the server answered nothing");
  assert.ok(Math.abs(ghost.length - answer.chars) <= 1,
    `the ghost text (${ghost.length} chars: ${JSON.stringify(ghost)}) is not the final answer (${answer.chars} chars)`);
}

function firstWord(s) {
  return s.match(/^\s*[\w.]+|^\s*\S/)?.[0] ?? s;
}

before(async () => {
  assert.ok(fs.existsSync(VSIX), `${VSIX} is missing: build it with \`make vscode\``);
  assert.ok(fs.existsSync(SERVER), `${SERVER} is missing: run \`make install\``);
  fs.rmSync(SHOTS, { recursive: true, force: true });
  telemetry = path.join(SHOTS, "events.jsonl");
  editor = await startEditor({
    vsix: VSIX,
    shots: SHOTS,
    files: { [FILE]: SOURCE },
    settings: {
      "codedec.serverPath": SERVER,
      "codedec.serverArgs": ["--telemetry", telemetry],
      "codedec.model": "smollm2",
      "codedec.maxTokens": 40,
      "codedec.timeBudgetMs": 0,
      "editor.quickSuggestions": { other: false, comments: false, strings: false },
      "editor.suggestOnTriggerCharacters": false,
      "editor.autoClosingBrackets": "never",
      "editor.autoClosingQuotes": "never",
      "editor.minimap.enabled": false,
      "editor.autoIndent": "none",
      "workbench.secondarySideBar.defaultVisibility": "hidden",
      "workbench.panel.defaultLocation": "bottom",
      "workbench.startupEditor": "none",
      "workbench.tips.enabled": false,
      "workbench.welcomePage.walkthroughs.openOnInstall": false,
      "chat.disableAIFeatures": true,
      "telemetry.telemetryLevel": "off",
      "extensions.autoUpdate": false,
      "extensions.autoCheckUpdates": false,
      "files.autoSave": "off",
      "window.restoreWindows": "none",
    },
  });
});

after(async () => {
  if (!editor) return;
  const left = await editor.close();
  const strays = processesMentioning(editor.root);
  fs.rmSync(editor.root, { recursive: true, force: true });
  assert.deepEqual(left, [], `processes outlived the editor: ${left.join(", ")}`);
  assert.deepEqual(strays, [], `processes outlived the editor: ${JSON.stringify(strays)}`);
});

const statuses = [];
async function pollStatus(untilIcon, timeoutMs) {
  return waitFor(`the status bar to show ${untilIcon}`, async () => {
    const s = await editor.status();
    if (s && (statuses.length === 0 || statuses[statuses.length - 1].text !== s.text)) statuses.push(s);
    return s && s.icon === untilIcon ? s : null;
  }, timeoutMs, 50);
}

test("typing while the server starts still yields a suggestion; status loading -> ready", async () => {
  await editor.open(FILE);
  await editor.press("Control+End");
  // Typed at once, while the extension starts `codedec serve` and the model loads.
  await editor.type("\n    def circumference(self):\n        ", 15);
  const loading = await waitFor("the codedec status bar item", () => editor.status(), 30000, 50);
  statuses.push(loading);
  await editor.screenshot("01-loading");
  await pollStatus("check", 120000);
  assert.ok(statuses.some((s) => /loading/.test(s.text) || s.icon === "sync"),
    `no loading state before ready: ${JSON.stringify(statuses)}`);
  // No keystroke since: the suggestion must come by itself.
  const shown = await settledGhost("a suggestion after start-up, without another keystroke", 60000);
  assertWhole(shown);
  await editor.screenshot("02-first-suggestion");
});

test("ghost text grows while tokens stream, and Tab accepts it", async () => {
  await editor.press("Escape");
  await editor.press("Control+End");
  await editor.type("\n\ndef describe(shape):\n    ", 15);
  const seen = await watchGhost();
  const final = seen[seen.length - 1];
  await editor.screenshot("03-streamed");
  assertWhole(final);
  assert.ok(seen.length >= 3, `want >= 2 distinct ghost texts before the final one, saw ${JSON.stringify(seen)}`);
  for (let i = 1; i < seen.length; i++) {
    assert.ok(seen[i].replace(/\s+$/, "").length >= seen[i - 1].replace(/\s+$/, "").length - 1,
      `the ghost text shrank: ${JSON.stringify(seen)}`);
  }
  await editor.press("Tab");
  await sleep(300);
  assert.equal(await editor.ghost(), "", "ghost text still shown after Tab");
  const text = await editor.saved(FILE);
  const firstLine = final.split("\n")[0].trim();
  assert.ok(text.includes(`def describe(shape):\n`) && text.includes(firstLine),
    `the document lacks the accepted suggestion ${JSON.stringify(final)}:\n${text}`);
  await editor.screenshot("04-accepted");
});

test("accept-word and accept-line take part of the suggestion", async () => {
  await editor.press("Control+End");
  await editor.type("\n\ndef scale(shape, factor):\n    ", 15);
  const final = await settledGhost("a suggestion to accept word by word");
  const before = await editor.saved(FILE);
  await editor.press("Control+ArrowRight");
  await sleep(300);
  const afterWord = await editor.saved(FILE);
  const word = firstWord(final);
  assert.ok(afterWord.length > before.length, "accept-word inserted nothing");
  assert.ok(final.startsWith(afterWord.slice(before.length).replace(/^\n/, "")) || afterWord.includes(word.trim()),
    `accept-word inserted ${JSON.stringify(afterWord.slice(before.length))}, suggestion ${JSON.stringify(final)}`);
  const rest = await editor.ghost();
  assert.ok(rest.length > 0 && rest.length < final.length, `after accept-word the rest should show: ${JSON.stringify(rest)}`);
  await editor.press("Control+Alt+ArrowRight");
  await sleep(300);
  const afterLine = await editor.saved(FILE);
  assert.ok(afterLine.length > afterWord.length, "accept-line inserted nothing");
  assert.ok(afterLine.includes(final.split("\n")[0].trim()), `accept-line: the first line ${JSON.stringify(final)} is not in\n${afterLine}`);
});

test("Escape dismisses the suggestion", async () => {
  await editor.press("Escape");
  await editor.press("Control+End");
  await editor.type("\n\ndef perimeter(width, height):\n    ", 15);
  await settledGhost("a suggestion to dismiss");
  await editor.press("Escape");
  await sleep(800);
  assert.equal(await editor.ghost(), "", "Escape left the ghost text");
});

test("a server killed mid-session restarts and completions resume", async () => {
  const servers = () => processesMentioning(telemetry).filter((p) => p.cmd.includes(" serve"));
  const [server] = servers();
  assert.ok(server, "no codedec serve process found");
  process.kill(server.pid, "SIGKILL");
  await waitFor("a new server process", () => servers().some((p) => p.pid !== server.pid), 30000, 100);
  await pollStatus("check", 120000);
  await editor.press("Control+End");
  await editor.type("\n\ndef diameter(radius):\n    ", 15);
  const shown = await settledGhost("a suggestion from the restarted server", 60000);
  assertWhole(shown);
  await editor.screenshot("05-after-restart");
});
