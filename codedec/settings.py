"""``ServerSettings``: the one settings type of every frontend (DESIGN §4: one frozen config per layer).

What it is: what a completion is generated with — model, decoding components, sampling knobs,
budgets, line mode — parsed once from wherever the user set it: the CLI flags of ``codedec
complete`` / ``codedec eval`` / ``codedec serve``, the LSP ``initializationOptions`` and
``workspace/didChangeConfiguration``, and the websocket request ``options`` all map onto this one
type (``from_options``), so a knob exists everywhere or nowhere.

What it is not: a request (``codedec.service.CompletionRequest`` carries the per-cursor text).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from codedec.decoding import parse_decoding
from codedec.presets import DEFAULT_MODEL

log = logging.getLogger(__name__)

LINE_MODES = ("auto", "single", "multi")

# Client option names (camelCase, as VS Code settings spell them) -> field names.
_ALIASES = {
    "maxTokens": "max_tokens",
    "debounceMs": "debounce_ms",
    "timeBudgetMs": "time_budget_ms",
    "enabledLanguages": "languages",
    "enabled_languages": "languages",
    "lineMode": "line_mode",
    "maxPromptTokens": "max_prompt_tokens",
    "telemetryPath": "telemetry_path",
    "topK": "top_k",
    "topP": "top_p",
    "uncertaintyCut": "uncertainty_cut",
    "minFirstProb": "min_first_prob",
    "minLineProb": "min_line_prob",
    "contextTokens": "context_tokens",
}


MAX_DEBOUNCE_MS = 5000  # a longer wait is a misconfiguration, not a preference
MAX_TOKENS = 8192
MAX_TIME_BUDGET_MS = 600_000.0


@dataclass(frozen=True)
class ServerSettings:
    """What a server does for every request; read by the frontends, never mutated (use ``updated``).

    ``languages``: language ids to complete in (empty = all). ``line_mode``: ``auto`` decides single
    or multi-line from the cursor context, ``single``/``multi`` force one. ``time_budget_ms``:
    wall-clock budget per completion (None = none). ``telemetry_path``: JSONL log of accept/reject
    events (None = the default under the codedec cache, ``""`` = off). ``temperature`` (0 =
    greedy), ``top_k`` (0 = off), ``top_p`` (1 = off), ``seed`` (None = random): sampling.
    ``strategy``: how tokens are chosen (``codedec.strategy``; ``plain`` = one per forward).
    ``uncertainty_cut`` (nats, None = off): a multi-line suggestion ends before the first line
    after its first whose first uncertain token reaches this entropy (``codedec.uncertainty``);
    ``min_first_prob`` (None = off): a suggestion whose first token is less likely is withheld;
    ``min_line_prob`` (None = off): one whose first line's tokens are less likely on geometric
    mean is withheld (streamed once that line is complete).
    ``context``: cross-file context from the workspace (``codedec.context.crossfile``: ``none``,
    ``truncate``, ``longcodezip``, ``coarse``); ``context_tokens``: its token budget (None = a
    quarter of the prompt budget).
    """

    model: str = DEFAULT_MODEL
    decoding: tuple[str, ...] = ()
    max_tokens: int = 64
    debounce_ms: int = 0
    time_budget_ms: float | None = 2000.0
    languages: tuple[str, ...] = ()
    line_mode: str = "auto"
    heal: bool = True
    pie: bool = True
    max_prompt_tokens: int | None = None
    telemetry_path: str | None = None
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    strategy: str = "plain"
    uncertainty_cut: float | None = None
    min_first_prob: float | None = None
    min_line_prob: float | None = None
    context: str = "truncate"
    context_tokens: int | None = None

    def __post_init__(self) -> None:
        from codedec.sampling import SamplingParams
        from codedec.strategy import make_strategy

        SamplingParams(temperature=self.temperature, top_k=self.top_k, top_p=self.top_p)  # raises on bad values
        make_strategy(self.strategy)
        if not 1 <= self.max_tokens <= MAX_TOKENS:
            raise ValueError(f"max_tokens must be in 1..{MAX_TOKENS}, got {self.max_tokens}")
        if not 0 <= self.debounce_ms <= MAX_DEBOUNCE_MS:
            raise ValueError(f"debounce_ms must be in 0..{MAX_DEBOUNCE_MS}, got {self.debounce_ms}")
        if self.time_budget_ms is not None and not 0 < self.time_budget_ms <= MAX_TIME_BUDGET_MS:
            raise ValueError(f"time_budget_ms must be in (0, {MAX_TIME_BUDGET_MS}] (or null for none), "
                             f"got {self.time_budget_ms}")
        if self.line_mode not in LINE_MODES:
            raise ValueError(f"line_mode must be one of {LINE_MODES}, got {self.line_mode!r}")
        if self.max_prompt_tokens is not None and not 16 <= self.max_prompt_tokens <= 1 << 20:
            raise ValueError(f"max_prompt_tokens must be in 16..{1 << 20}, got {self.max_prompt_tokens}")
        if not self.model:
            raise ValueError("model must be a non-empty preset name or path")
        if self.uncertainty_cut is not None and not self.uncertainty_cut > 0:
            raise ValueError(f"uncertainty_cut must be > 0 nats (or null: off), got {self.uncertainty_cut}")
        from codedec.context.crossfile import check_mode

        check_mode(self.context)
        if self.context_tokens is not None and not 0 <= self.context_tokens <= 1 << 20:
            raise ValueError(f"context_tokens must be in 0..{1 << 20} (or null: a quarter of the prompt), "
                             f"got {self.context_tokens}")
        for name in ("min_first_prob", "min_line_prob"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 1:
                raise ValueError(f"{name} must be in [0, 1] (or null: off), got {value}")

    def language_enabled(self, language_id: str) -> bool:
        return not self.languages or language_id in self.languages

    def updated(self, options: Mapping[str, Any] | None) -> ServerSettings:
        """These settings with ``options`` applied (see ``from_options``)."""
        return ServerSettings.from_options(options, base=self)

    @classmethod
    def from_options(
        cls, options: Mapping[str, Any] | None, base: ServerSettings | None = None
    ) -> ServerSettings:
        """Parse client options into settings, starting from ``base`` (default: the defaults).

        Accepts snake_case or camelCase keys, flat or nested under ``"codedec"`` (the shape
        ``didChangeConfiguration`` sends). Unknown keys are logged and ignored; a known key with a
        bad value raises ``ValueError`` naming the key and the value.
        """
        base = base or cls()
        if not options:
            return base
        if not isinstance(options, Mapping):
            raise ValueError(f"settings must be an object, got {type(options).__name__}: {options!r}")
        if isinstance(options.get("codedec"), Mapping):
            options = options["codedec"]
        known = {f.name: f for f in fields(cls)}
        changes: dict[str, Any] = {}
        implied = None  # a strategy named among the decoding components ("grammar,adadec")
        for key, value in options.items():
            name = _ALIASES.get(key, key)
            if name not in known:
                log.warning("ignoring unknown setting %r", key)
                continue
            try:
                if name == "decoding":
                    value, implied = split_strategy(value)
                changes[name] = _coerce(name, value)
            except (TypeError, ValueError) as err:
                raise ValueError(f"setting {key!r}: {err} (got {value!r})") from None
        if implied is not None:
            explicit = changes.get("strategy", "plain")
            if explicit not in ("plain", implied):
                raise ValueError(f"decoding names the strategy {implied!r} but strategy is {explicit!r}")
            changes["strategy"] = implied
        return replace(base, **changes)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["decoding"] = list(self.decoding)
        d["languages"] = list(self.languages)
        return d


def split_strategy(value: Any) -> tuple[Any, str | None]:
    """A decoding list (``"grammar,adadec"`` or a list) -> (the components, the strategy named
    among them or None): ``adadec`` is a strategy, selectable where components are."""
    from codedec.strategy import STRATEGIES

    if value is None:
        return value, None
    names = value.split(",") if isinstance(value, str) else list(value) if isinstance(value, list | tuple) else None
    if names is None:
        return value, None
    names = [n.strip() if isinstance(n, str) else n for n in names]
    strategies = [n for n in names if n in STRATEGIES and n != "plain"]
    if len(set(strategies)) > 1:
        raise ValueError(f"at most one strategy among the decoding components, got {', '.join(strategies)}")
    return [n for n in names if n not in strategies], (strategies[0] if strategies else None)


def _coerce(name: str, value: Any) -> Any:
    """One option value -> the field's type (strict: ``"12"`` is not an int)."""
    if name == "decoding":
        return parse_decoding(value if value is not None else ())
    if name == "languages":
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise TypeError("expected a list of language ids")
        return tuple(v.strip() for v in value)
    if name in ("max_tokens", "debounce_ms", "max_prompt_tokens", "top_k", "seed", "context_tokens"):
        if value is None and name in ("max_prompt_tokens", "seed", "context_tokens"):
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
            raise TypeError("expected an integer")
        return int(value)
    if name == "time_budget_ms":
        if value is None or value == 0:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError("expected a number of milliseconds")
        return float(value)
    if name in ("heal", "pie"):
        if not isinstance(value, bool):
            raise TypeError("expected true or false")
        return value
    if name in ("uncertainty_cut", "min_first_prob", "min_line_prob"):
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError("expected a number or null")
        return float(value)
    if name in ("temperature", "top_p"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError("expected a number")
        return float(value)
    if name in ("model", "line_mode", "strategy", "context"):
        if not isinstance(value, str):
            raise TypeError("expected a string")
        return value
    if name == "telemetry_path":
        if value is not None and not isinstance(value, str):
            raise TypeError("expected a path or null")
        return value
    raise AssertionError(name)  # every field is handled above


PRECISIONS = ("auto", "fp32", "q4")  # codedec.loading.load_model's precision setting


def add_precision_option(parser) -> None:
    """``--precision`` on a command line (complete, serve, eval): ``use_precision_option`` then
    exports it as ``$CODEDEC_PRECISION``, which ``load_model`` reads (servers started from the
    command inherit it)."""
    parser.add_argument("--precision", choices=PRECISIONS, default=None,
                        help="auto (default, or $CODEDEC_PRECISION): the int4 decode kernel for layers the "
                        "model's GGUF stores in 4 bits (q4), else fp32; fp32: exact")


def use_precision_option(args) -> None:
    """Export a given ``--precision`` (see ``add_precision_option``)."""
    if getattr(args, "precision", None):
        os.environ["CODEDEC_PRECISION"] = args.precision
