"""The codedec language server (pygls 2) and the editor heuristics every client shares.

- ``server.py``: the pygls server (capabilities, handlers, progress, error boundary);
- ``heuristics.py``: none / single / multi-line from the cursor context;
- ``postprocess.py``: indentation, duplicate closers, suffix overlap;
- ``result_cache.py``: typed-ahead reuse of shown completions;
- ``positions.py``: LSP positions in UTF-16/UTF-8/UTF-32 <-> string offsets;
- ``telemetry.py`` / ``stats.py``: the local accept/reject log and ``codedec stats``;
- ``cli.py``: ``codedec serve`` options (``python -m lsp_server`` runs it).
"""
