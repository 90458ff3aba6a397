"""The codedec language server (pygls 2).

- ``server.py``: the pygls server (capabilities, handlers, progress, error boundary);
- the editor heuristics every path shares live in ``codedec.heuristics`` (none / single /
  multi-line) and ``codedec.postprocess`` (indentation, closers, suffix overlap), applied by the
  service for the CLI, eval and websocket alike;
- ``result_cache.py``: typed-ahead reuse of shown completions;
- ``positions.py``: LSP positions in UTF-16/UTF-8/UTF-32 <-> string offsets;
- ``telemetry.py`` / ``stats.py``: the local accept/reject log and ``codedec stats``;
- ``cli.py``: ``codedec serve`` options (``python -m lsp_server`` runs it).
"""
