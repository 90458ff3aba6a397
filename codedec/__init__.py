"""codedec: local code completion with code-aware decoding.

The engine speaks token ids (``engine``, ``forward``, ``cache``, ``sampling``, ``detokenize``);
``context`` builds prompts; ``processors`` constrain and reshape logits; frontends (CLI, language
server, websocket API) sit on ``complete`` / ``service``. See DESIGN.md for the data path.
"""

__version__ = "0.1.0"
