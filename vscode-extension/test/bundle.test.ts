/**
 * The bundle VS Code loads (dist/extension.js, built by `npm run bundle`) loads with a stubbed
 * `vscode` module — every import resolves — and exports activate/deactivate; and package.json's
 * contributions name the commands the extension registers.
 */

import assert from "node:assert/strict";
import * as fs from "node:fs";
import Module from "node:module";
import * as path from "node:path";
import { test } from "node:test";
import { COMMANDS } from "../src/core";

const ROOT = path.resolve(__dirname, "..", "..");

function anything(): any {
  // a value that is a constructible function and whose every property is another such value
  const fn = function () {};
  return new Proxy(fn, {
    get: (target, prop) => (prop === "prototype" ? (target as any).prototype : prop === Symbol.toPrimitive ? () => "" : anything()),
    construct: () => anything(),
    apply: () => anything(),
  });
}

test("dist/extension.js loads with a stubbed vscode module and exports activate/deactivate", () => {
  const bundle = path.join(ROOT, "dist", "extension.js");
  assert.ok(fs.existsSync(bundle), "run `npm run bundle` first");
  const load = (Module as any)._load;
  (Module as any)._load = function (request: string, ...rest: unknown[]) {
    return request === "vscode" ? anything() : load.call(this, request, ...rest);
  };
  try {
    const ext = require(bundle);
    assert.equal(typeof ext.activate, "function");
    assert.equal(typeof ext.deactivate, "function");
  } finally {
    (Module as any)._load = load;
  }
});

test("package.json: activation on languages (not *), every command contributed, settings schema", () => {
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, "package.json"), "utf8"));
  assert.ok(pkg.activationEvents.length > 0 && pkg.activationEvents.every((e: string) => e.startsWith("onLanguage:")));
  const contributed = pkg.contributes.commands.map((c: { command: string }) => c.command);
  for (const c of Object.values(COMMANDS)) if (c !== COMMANDS.accepted) assert.ok(contributed.includes(c), c);
  const props = Object.keys(pkg.contributes.configuration.properties);
  for (const k of ["enabled", "serverPath", "serverArgs", "model", "decoding", "maxTokens", "debounceMs", "timeBudgetMs", "languages", "lineMode"]) {
    assert.ok(props.includes(`codedec.${k}`), k);
  }
});
