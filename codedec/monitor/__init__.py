"""Language-server client for monitor-guided decoding (MGD): ``MonitorClient`` keeps one warm
stdio language server per workspace (jedi-language-server by default) and answers completion
queries within a time budget; ``documents`` holds the LSP position and incremental-edit helpers."""

from codedec.monitor.client import DEFAULT_COMMAND, MonitorClient, close_all, monitor_for

__all__ = ["DEFAULT_COMMAND", "MonitorClient", "close_all", "monitor_for"]
