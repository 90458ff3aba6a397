/**
 * A real VS Code for the extension's end-to-end test: code-server (the VS Code workbench and
 * extension host, served on 127.0.0.1) driven by Debian's headless Chromium through puppeteer-core.
 *
 * `startEditor({vsix, settings, files})` installs the .vsix into a fresh extensions dir, starts
 * code-server on a free loopback port with a fresh user-data dir, config and data homes (nothing
 * written under ~), opens the workspace in Chromium and returns an `Editor`; `editor.close()` stops
 * Chromium and code-server and kills every process either started (the extension host and
 * `codedec serve` included), and reports any that outlived it.
 *
 * Where the tools are: install.sh puts Node 24 and code-server under CODEDEC_E2E_CACHE (default
 * ~/.cache/codedec/vscode-e2e) and writes their paths to `tools.json` there.
 */

import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import puppeteer from "puppeteer-core";

export const CACHE = process.env.CODEDEC_E2E_CACHE || path.join(os.homedir(), ".cache", "codedec", "vscode-e2e");

/** {node, codeServer, chromium}: what install.sh installed (throws with the fix when absent). */
export function tools() {
  const file = path.join(CACHE, "tools.json");
  if (!fs.existsSync(file)) throw new Error(`${file} is missing: run tests/vscode_e2e/install.sh (make test does)`);
  return JSON.parse(fs.readFileSync(file, "utf8"));
}

async function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Every live descendant of `pid` (children first found by walking /proc's parent links). */
export function descendants(pid) {
  const parent = new Map();
  for (const name of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${name}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" "); // state ppid ...
      parent.set(Number(name), Number(fields[1]));
    } catch {
      // gone meanwhile
    }
  }
  const out = [];
  const frontier = [pid];
  while (frontier.length) {
    const p = frontier.pop();
    for (const [child, pp] of parent) {
      if (pp === p && !out.includes(child)) {
        out.push(child);
        frontier.push(child);
      }
    }
  }
  return out;
}

function alive(pid) {
  try {
    process.kill(pid, 0);
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
  } catch {
    return false;
  }
}

/** Processes whose command line mentions `needle` (our temp dir names them all). */
export function processesMentioning(needle) {
  const found = [];
  for (const name of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    try {
      const cmd = fs.readFileSync(`/proc/${name}/cmdline`, "utf8").replace(/\0/g, " ");
      if (cmd.includes(needle) && alive(Number(name))) found.push({ pid: Number(name), cmd: cmd.trim() });
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

function killAll(pids, signal) {
  for (const pid of pids) {
    try {
      process.kill(pid, signal);
    } catch {
      // already gone
    }
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitFor(what, fn, timeoutMs, everyMs = 100) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await fn();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

export class Editor {
  constructor(opts) {
    Object.assign(this, opts); // root, workspace, port, server (ChildProcess), browser, page, shots, log
  }

  /** Every process this editor started that is still alive (by tree and by the temp dir name). */
  processes() {
    const pids = new Set(descendants(this.server.pid));
    if (alive(this.server.pid)) pids.add(this.server.pid);
    if (this.browserPid) {
      if (alive(this.browserPid)) pids.add(this.browserPid);
      for (const p of descendants(this.browserPid)) pids.add(p);
    }
    for (const p of processesMentioning(this.root)) pids.add(p.pid);
    return [...pids].filter(alive);
  }

  async screenshot(name) {
    const file = path.join(this.shots, `${name}.png`);
    await this.page.screenshot({ path: file });
    return file;
  }

  /** Open a workspace file by name through Quick Open (Ctrl+P), as a user would. */
  async open(name) {
    const { page } = this;
    await page.keyboard.down("Control");
    await page.keyboard.press("KeyP");
    await page.keyboard.up("Control");
    await page.waitForSelector(".quick-input-widget input", { visible: true, timeout: 30000 });
    await page.keyboard.type(name, { delay: 20 });
    await waitFor(`${name} in Quick Open`, () =>
      page.evaluate((n) => [...document.querySelectorAll(".quick-input-list .monaco-list-row")]
        .some((r) => r.textContent.includes(n)), name), 15000);
    await page.keyboard.press("Enter");
    await waitFor(`the editor of ${name}`, () =>
      page.evaluate((n) => !!document.querySelector(`.tab.active[aria-label*="${n}"]`) &&
        !!document.querySelector(".monaco-editor.focused"), name), 20000);
  }

  async press(combo) {
    const keys = combo.split("+");
    for (const k of keys.slice(0, -1)) await this.page.keyboard.down(k);
    await this.page.keyboard.press(keys[keys.length - 1]);
    for (const k of keys.slice(0, -1).reverse()) await this.page.keyboard.up(k);
  }

  async type(text, delay = 30) {
    await this.page.keyboard.type(text, { delay });
  }

  /** The ghost text shown now ("" when none): the cursor line's part, then the lines below it. */
  async ghost() {
    return this.page.evaluate(() => {
      const editor = document.querySelector(".monaco-editor.focused") || document.querySelector(".monaco-editor");
      if (!editor) return "";
      const inline = [...editor.querySelectorAll(".ghost-text-decoration, .ghost-text-decoration-preview")]
        .map((e) => e.textContent).join("");
      const below = [...editor.querySelectorAll(".ghost-text .view-line, div.ghost-text > div")]
        .map((e) => e.textContent.replace(/\u00a0/g, " "));
      return (inline + (below.length ? "\n" + below.join("\n") : "")).replace(/\u00a0/g, " ");
    });
  }

  /** The text of the codedec status bar item and its icon ("check", "sync", "error", ...). */
  async status() {
    return this.page.evaluate(() => {
      for (const item of document.querySelectorAll(".statusbar-item")) {
        const text = item.textContent.trim();
        if (!/codedec/.test(text)) continue;
        const icon = item.querySelector(".codicon");
        const name = icon ? [...icon.classList].find((c) => c.startsWith("codicon-") && c !== "codicon-modifier-spin") : "";
        return { text, icon: name ? name.replace("codicon-", "") : "" };
      }
      return null;
    });
  }

  /** Save the active editor (Ctrl+S) and read the file back from disk. */
  async saved(name) {
    const file = path.join(this.workspace, name);
    const before = fs.statSync(file).mtimeMs;
    await this.press("Control+KeyS");
    await waitFor(`${name} saved`, () => fs.statSync(file).mtimeMs !== before, 10000, 50);
    await sleep(100);
    return fs.readFileSync(file, "utf8");
  }

  async close() {
    const left = [];
    try {
      await this.browser?.close();
    } catch {
      // killed below
    }
    const tree = this.processes();
    killAll(tree, "SIGTERM");
    try {
      process.kill(-this.server.pid, "SIGTERM");
    } catch {
      // no group left
    }
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline && this.processes().length) await sleep(100);
    const stubborn = this.processes();
    killAll(stubborn, "SIGKILL");
    await sleep(300);
    for (const pid of this.processes()) left.push(pid);
    // Keep the editor's logs (the extension's output channel among them) next to the screenshots.
    try {
      fs.cpSync(path.join(this.root, "user-data", "logs"), path.join(this.shots, "logs"), { recursive: true });
    } catch {
      // no logs written
    }
    return left;
  }
}

/**
 * Start code-server + Chromium on `files` ({name: text}) with user `settings`, the extension from
 * `vsix` installed. `shots`: where screenshots go. Logs go to `<shots>/code-server.log`.
 */
export async function startEditor({ vsix, settings, files, shots, viewport = { width: 1280, height: 800 } }) {
  const t = tools();
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "codedec-vscode-e2e-"));
  const dirs = Object.fromEntries(["user-data", "extensions", "workspace", "config", "data", "chromium", "tmp"]
    .map((d) => [d, path.join(root, d)]));
  Object.values(dirs).forEach((d) => fs.mkdirSync(d, { recursive: true }));
  fs.mkdirSync(path.join(dirs["user-data"], "User"), { recursive: true });
  fs.writeFileSync(path.join(dirs["user-data"], "User", "settings.json"), JSON.stringify(settings, null, 2));
  for (const [name, text] of Object.entries(files)) fs.writeFileSync(path.join(dirs.workspace, name), text);
  fs.mkdirSync(shots, { recursive: true });
  // No extension gallery (code-server would query one on the internet): the .vsix is local.
  // TMPDIR / XDG_RUNTIME_DIR: code-server's IPC sockets and Chromium's temp dirs go under root,
  // removed with it (in /tmp they outlived every run).
  const env = { ...process.env, XDG_CONFIG_HOME: dirs.config, XDG_DATA_HOME: dirs.data, HOME: root,
    TMPDIR: dirs.tmp, XDG_RUNTIME_DIR: dirs.tmp, EXTENSIONS_GALLERY: "{}" };
  delete env.VSCODE_IPC_HOOK_CLI;
  const common = ["--user-data-dir", dirs["user-data"], "--extensions-dir", dirs.extensions,
    "--config", path.join(dirs.config, "config.yaml")];
  fs.writeFileSync(path.join(dirs.config, "config.yaml"), "auth: none\ncert: false\n");

  const install = spawnSync(t.node, [t.codeServer, ...common, "--install-extension", vsix],
    { env, encoding: "utf8", timeout: 120000 });
  if (install.status !== 0) {
    fs.rmSync(root, { recursive: true, force: true });
    throw new Error(`installing ${vsix} failed:\n${install.stdout}\n${install.stderr}`);
  }

  const port = await freePort();
  const logFile = path.join(shots, "code-server.log");
  const logFd = fs.openSync(logFile, "w");
  const server = spawn(t.node, [t.codeServer, ...common, "--auth", "none", "--bind-addr", `127.0.0.1:${port}`,
    "--disable-telemetry", "--disable-update-check", "--disable-workspace-trust", "--disable-getting-started-override",
    "--reconnection-grace-time", "5", dirs.workspace], { env, stdio: ["ignore", logFd, logFd], detached: true });
  const editor = new Editor({ root, workspace: dirs.workspace, port, server, shots, logFile });
  // If this process is stopped before close() (a test-runner timeout, Ctrl+C), take the editor
  // down with it: code-server's process group (the extension host and `codedec serve` in it too)
  // and Chromium.
  const reap = () => {
    killAll([...editor.processes()], "SIGKILL");
    try {
      process.kill(-server.pid, "SIGKILL");
    } catch {
      // gone
    }
  };
  process.once("exit", reap);
  for (const signal of ["SIGTERM", "SIGINT"]) {
    process.once(signal, () => {
      reap();
      process.exit(128 + (signal === "SIGINT" ? 2 : 15));
    });
  }
  try {
    await waitFor("code-server to listen", () => fetch(`http://127.0.0.1:${port}/healthz`).then((r) => r.ok, () => false),
      60000, 200);
    editor.browser = await puppeteer.launch({
      executablePath: t.chromium,
      headless: true,
      userDataDir: dirs.chromium,
      args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--use-mock-keychain",
        `--window-size=${viewport.width},${viewport.height}`],
      defaultViewport: viewport,
      env: { ...env, HOME: root },
    });
    editor.browserPid = editor.browser.process()?.pid;
    editor.page = await editor.browser.newPage();
    await editor.page.goto(`http://127.0.0.1:${port}/?folder=${encodeURIComponent(dirs.workspace)}`,
      { waitUntil: "domcontentloaded", timeout: 60000 });
    await editor.page.waitForSelector(".monaco-workbench", { timeout: 60000 });
    await waitFor("the workbench to settle", () => editor.page.evaluate(() =>
      !!document.querySelector(".part.statusbar") && !!document.querySelector(".explorer-folders-view, .part.sidebar")),
    60000, 200);
    return editor;
  } catch (err) {
    await editor.close();
    fs.rmSync(root, { recursive: true, force: true });
    throw err;
  }
}

export { sleep, waitFor };
