"""``codedec serve`` / ``python -m lsp_server``: the language server and/or the websocket API.

``add_serve_arguments(parser)`` adds the options, ``run_serve(args)`` runs until the client exits
(LSP ``exit`` / end of stdin / Ctrl-C) and returns the exit code: 0, or 2 with one message on
stderr for bad options. The LSP server speaks over stdio by default (or ``--tcp HOST:PORT``);
``--ws HOST:PORT`` adds the websocket API on its own thread, ``--no-lsp`` serves only that.

Settings precedence: defaults < command-line options < the client's ``initializationOptions`` <
``workspace/didChangeConfiguration``. The model loads once: with ``--ws`` at start-up (the model of
the command line), otherwise when the client initializes (so ``initializationOptions.model``
applies).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from codedec.service import LINE_MODES, ServerSettings
from codedec.settings import add_precision_option, use_precision_option

EXIT_USAGE = 2


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``codedec serve`` (and ``python -m lsp_server``)."""
    parser.add_argument(
        "--model", default=None, help="preset name, local dir, .gguf file or cached hub id (default smollm2)"
    )
    add_precision_option(parser)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--stdio", action="store_true", help="LSP over stdin/stdout (the default)")
    where.add_argument("--tcp", metavar="HOST:PORT", default=None, help="LSP over TCP instead of stdio")
    parser.add_argument(
        "--ws", metavar="HOST:PORT", default=None, help="also serve the websocket API (e.g. 127.0.0.1:8765)"
    )
    parser.add_argument("--no-lsp", action="store_true", help="serve only the websocket API (needs --ws)")
    parser.add_argument(
        "--ws-token",
        default=os.environ.get("CODEDEC_WS_TOKEN"),
        help="token websocket clients must present; required for a non-loopback --ws (env CODEDEC_WS_TOKEN)",
    )
    parser.add_argument(
        "--ws-allow-origin", action="append", default=[], metavar="ORIGIN",
        help="a browser Origin allowed to open the websocket API (repeatable; default: none, so web pages "
             "cannot drive it; editors and scripts send no Origin)",
    )
    parser.add_argument(
        "--max-message-mb", type=float, default=64.0,
        help="largest LSP message accepted, in MiB (default 64); a larger one is answered with an error "
             "and skipped",
    )
    parser.add_argument(
        "--decoding", default=None, help="comma-separated decoding components (empty = plain)"
    )
    parser.add_argument(
        "--max-tokens", type=int, default=None, help="maximum new tokens per completion (default 64)"
    )
    parser.add_argument(
        "--debounce-ms",
        type=int,
        default=None,
        help="wait this long for more typing before generating (default 0)",
    )
    parser.add_argument(
        "--time-budget-ms",
        type=float,
        default=None,
        help="wall-clock budget per completion (default 2000; 0 = none)",
    )
    parser.add_argument(
        "--languages", default=None, help="comma-separated language ids to complete in (default all)"
    )
    parser.add_argument(
        "--line-mode", choices=LINE_MODES, default=None, help="single/multi-line policy (default auto)"
    )
    parser.add_argument("--no-heal", action="store_true", help="turn token healing at the cursor off")
    parser.add_argument(
        "--no-pie",
        action="store_true",
        help="turn edit-aware KV reuse off (after a mid-file edit, re-encode from the edit instead of "
        "re-rotating the cached keys after it)",
    )
    parser.add_argument(
        "--telemetry",
        metavar="PATH",
        default=None,
        help="accept/reject JSONL log ('' = off; default ~/.cache/codedec/telemetry.jsonl)",
    )


def settings_from_args(args: argparse.Namespace) -> ServerSettings:
    """The options given on the command line -> settings (raises ``ValueError``)."""
    given: dict[str, Any] = {}
    for name in (
        "model",
        "decoding",
        "max_tokens",
        "debounce_ms",
        "time_budget_ms",
        "languages",
        "line_mode",
    ):
        value = getattr(args, name, None)
        if value is not None:
            given[name] = value
    if getattr(args, "no_heal", False):
        given["heal"] = False
    if getattr(args, "no_pie", False):
        given["pie"] = False
    if getattr(args, "telemetry", None) is not None:
        given["telemetry_path"] = args.telemetry
    return ServerSettings.from_options(given)


def _stderr(message: str) -> None:
    print(f"codedec: {message}", file=sys.stderr, flush=True)


def run_serve(args: argparse.Namespace) -> int:
    """Serve until the client goes away (see the module docstring). Returns the exit code."""
    use_precision_option(args)  # read by load_model
    from codedec.ws import check_bind, parse_hostport

    try:
        settings = settings_from_args(args)
        ws = parse_hostport(args.ws) if args.ws else None
        tcp = parse_hostport(args.tcp) if args.tcp else None
        if args.no_lsp and ws is None:
            raise ValueError("--no-lsp serves only the websocket API: give --ws HOST:PORT too")
        if ws is not None:
            check_bind(ws[0], args.ws_token)
        if not 0 < args.max_message_mb <= 4096:
            raise ValueError(f"--max-message-mb must be in (0, 4096], got {args.max_message_mb}")
    except ValueError as err:
        _stderr(str(err))
        return EXIT_USAGE
    # The engine thread runs Python between torch ops; a short GIL switch interval lets the event
    # loop send partials and answer cancels without waiting out the default 5 ms slices.
    sys.setswitchinterval(0.001)
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.WARNING, stream=sys.stderr, format="codedec %(levelname)s %(name)s: %(message)s"
        )

    service = None
    if ws is not None:
        service = _start_ws(settings, ws, args.ws_token, args.ws_allow_origin)
    if args.no_lsp:
        try:
            import threading

            threading.Event().wait()
        except KeyboardInterrupt:
            pass
        finally:
            service.close(2.0)
        return 0

    from lsp_server.server import create_server

    server = create_server(settings, service=service)
    server.max_message_bytes = int(args.max_message_mb * (1 << 20))
    try:
        if tcp is not None:
            _stderr(f"LSP on tcp://{tcp[0]}:{tcp[1]}")
            server.start_tcp(*tcp)
        else:
            stdin, stdout = _protocol_streams()
            server.start_io(stdin, stdout)
    except KeyboardInterrupt:
        pass
    finally:
        if server.service is not None:
            server.service.close(2.0)
    return 0


def _start_ws(settings: ServerSettings, where: tuple[str, int], token: str | None, origins: list[str]):
    from codedec.service import CompletionService
    from codedec.ws import WebsocketAPI, start_in_thread
    from lsp_server.server import default_loader

    _stderr(f"loading model {settings.model}")
    service = CompletionService(loader=default_loader(settings.model, _stderr), warmup=settings.decoding)
    api = WebsocketAPI(service, settings, token=token, allowed_origins=origins)
    start_in_thread(api, where[0], where[1], on_ready=lambda h, p: _stderr(f"websocket API on ws://{h}:{p}"))
    return service


def _protocol_streams():
    """stdin/stdout for the LSP stream, with file descriptor 1 pointed at stderr afterwards so a
    stray print (ours or a library's) cannot corrupt the protocol."""
    proto_out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    return sys.stdin.buffer, proto_out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lsp_server", description="codedec language server / websocket API"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    add_serve_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="codedec %(levelname)s %(name)s: %(message)s",
    )
    if args.verbose:  # pygls logs every message at INFO/DEBUG: keep it readable
        logging.getLogger("pygls").setLevel(logging.INFO)
    return run_serve(args)
