/**
 * Finding the `codedec` executable that `codedec.serverPath` names.
 *
 * Contract: a value with a path separator (`/path/to/.venv/bin/codedec`, `./x`) is used as is when
 * it is an executable file; a bare name (the default `codedec`) is searched on PATH, then in each
 * workspace folder's `.venv` (the layout `make install` creates in a codedec checkout). Either the
 * absolute path comes back, or an error message that says what was searched and what to set.
 *
 * No `vscode` import; the file-system check and the environment are parameters (tests pass fakes).
 */

import * as fs from "node:fs";
import * as path from "node:path";

export type Located = { path: string } | { error: string };

export interface LocateEnv {
  PATH?: string;
  PATHEXT?: string; // Windows: the extensions a bare command name may take
  platform: string; // process.platform
  workspaceDirs: string[];
  isExecutable: (file: string) => boolean;
}

/** The real executable check: a regular file the user may execute (Windows: any file). */
export function isExecutableFile(file: string): boolean {
  try {
    if (!fs.statSync(file).isFile()) return false;
    if (process.platform !== "win32") fs.accessSync(file, fs.constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

export function locateServer(name: string, env: LocateEnv): Located {
  const win = env.platform === "win32";
  const p = win ? path.win32 : path.posix;
  const exts = win ? ["", ...(env.PATHEXT ?? ".EXE;.CMD;.BAT").split(";").filter(Boolean)] : [""];
  const first = (candidates: string[]) => candidates.find((c) => env.isExecutable(c));
  if (name.includes("/") || (win && name.includes("\\"))) {
    const found = first(exts.map((e) => name + e));
    return found
      ? { path: p.resolve(found) }
      : { error: `codedec.serverPath "${name}" is not an executable file. Set it to the codedec executable, e.g. /path/to/codedec/.venv/bin/codedec.` };
  }
  const dirs = (env.PATH ?? "").split(win ? ";" : ":").filter(Boolean);
  const onPath = first(dirs.flatMap((d) => exts.map((e) => p.join(d, name + e))));
  if (onPath) return { path: onPath };
  const venvBin = win ? p.join(".venv", "Scripts") : p.join(".venv", "bin");
  const inVenv = first(env.workspaceDirs.flatMap((w) => exts.map((e) => p.join(w, venvBin, name + e))));
  if (inVenv) return { path: inVenv };
  const where = env.workspaceDirs.length ? ` or in ${env.workspaceDirs.map((w) => p.join(w, venvBin)).join(", ")}` : "";
  return {
    error: `cannot find "${name}" on PATH${where}. Install codedec (\`make install\` in its checkout) and set codedec.serverPath to its .venv/bin/codedec.`,
  };
}
