/**
 * VS Code entry point: binds `core.Extension` to the real `vscode` API and to
 * vscode-languageclient's `LanguageClient` over stdio.
 */

import * as vscode from "vscode";
import { CloseAction, ErrorAction, LanguageClient, LanguageClientOptions, ServerOptions } from "vscode-languageclient/node";
import { ClientSpec, Extension } from "./core";

let extension: Extension | undefined;

function makeClient(spec: ClientSpec): LanguageClient {
  const server: ServerOptions = { command: spec.command, args: spec.args, options: { env: { ...process.env } } };
  const options: LanguageClientOptions = {
    documentSelector: spec.languages.map((language) => ({ language })),
    initializationOptions: spec.initializationOptions,
    outputChannel: spec.output,
    // Suggestions come from our inline provider only: the server's textDocument/completion
    // fallback would list them twice, and a second request for the document supersedes the first.
    middleware: { provideCompletionItem: async () => [] },
    errorHandler: {
      error: () => ({ action: ErrorAction.Continue }),
      closed: () => {
        spec.onClosed();
        return { action: CloseAction.DoNotRestart, handled: true };
      },
    },
  };
  return new LanguageClient("codedec", "codedec", server, options);
}

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  extension = new Extension(vscode, context, makeClient);
  await extension.activate();
}

export async function deactivate(): Promise<void> {
  await extension?.stop();
  extension = undefined;
}
