/**
 * The extension's settings (`codedec.*` in VS Code) and what they become for the server:
 * the command line that starts `codedec serve`, and the `initializationOptions` /
 * `workspace/didChangeConfiguration` object (camelCase keys, as the server reads them).
 *
 * No `vscode` import: `readSettings` takes a getter, so tests pass a plain object.
 */

export const LINE_MODES = ["auto", "single", "multi"] as const;
export const DECODING = ["rpg", "grammar", "monitor"] as const;
export const DEFAULT_LANGUAGES = ["python", "javascript", "typescript", "go", "rust", "lua", "c", "cpp", "java"];

export interface Settings {
  enabled: boolean;
  serverPath: string; // the `codedec` executable (or a python with `-m lsp_server` in serverArgs)
  serverArgs: string[]; // extra arguments after `serve`
  model: string;
  decoding: string[];
  maxTokens: number;
  debounceMs: number;
  timeBudgetMs: number;
  languages: string[];
  lineMode: string;
}

export const DEFAULTS: Settings = {
  enabled: true,
  serverPath: "codedec",
  serverArgs: [],
  model: "smollm2",
  decoding: [],
  maxTokens: 64,
  debounceMs: 100,
  timeBudgetMs: 2000,
  languages: DEFAULT_LANGUAGES,
  lineMode: "auto",
};

/** Settings from `get(key)` (undefined = default); raises Error naming the key on a bad value. */
export function readSettings(get: (key: string) => unknown): Settings {
  const out: Settings = { ...DEFAULTS };
  const pick = <K extends keyof Settings>(key: K, check: (v: unknown) => boolean, what: string) => {
    const v = get(key);
    if (v === undefined || v === null) return;
    if (!check(v)) throw new Error(`codedec.${key} must be ${what}, got ${JSON.stringify(v)}`);
    out[key] = v as Settings[K];
  };
  const isStrings = (v: unknown) => Array.isArray(v) && v.every((x) => typeof x === "string");
  const isInt = (min: number) => (v: unknown) => typeof v === "number" && Number.isInteger(v) && v >= min;
  pick("enabled", (v) => typeof v === "boolean", "true or false");
  pick("serverPath", (v) => typeof v === "string" && v.length > 0, "a non-empty path");
  pick("serverArgs", isStrings, "a list of strings");
  pick("model", (v) => typeof v === "string" && v.length > 0, "a model name or path");
  pick("decoding", (v) => isStrings(v) && (v as string[]).every((d) => (DECODING as readonly string[]).includes(d)),
    `a list of ${DECODING.join(", ")}`);
  pick("maxTokens", isInt(1), "an integer >= 1");
  pick("debounceMs", isInt(0), "an integer >= 0");
  pick("timeBudgetMs", isInt(0), "an integer >= 0 (0 = no budget)");
  pick("languages", isStrings, "a list of language ids");
  pick("lineMode", (v) => (LINE_MODES as readonly string[]).includes(v as string), LINE_MODES.join(" | "));
  return out;
}

/** The object the server reads from `initializationOptions` and `didChangeConfiguration`. */
export function serverOptions(s: Settings): Record<string, unknown> {
  return {
    model: s.model,
    decoding: s.decoding,
    maxTokens: s.maxTokens,
    debounceMs: s.debounceMs,
    timeBudgetMs: s.timeBudgetMs,
    languages: s.languages,
    lineMode: s.lineMode,
  };
}

/** `{command, args}` that starts the language server over stdio. */
export function serverCommand(s: Settings): { command: string; args: string[] } {
  return { command: s.serverPath, args: ["serve", "--model", s.model, ...s.serverArgs] };
}

/** Do two settings need a server restart to take effect (the process's command line differs)? */
export function needsRestart(a: Settings, b: Settings): boolean {
  const ca = serverCommand(a);
  const cb = serverCommand(b);
  return ca.command !== cb.command || ca.args.join("\u0000") !== cb.args.join("\u0000");
}
