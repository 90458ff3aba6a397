"""Run one task under several decoding configurations: quality and latency from the same run.

Contract of :func:`run_eval`:

1. Every configuration sees the same samples in the same order, and the configurations
   are interleaved so that a drift in machine load hits them alike: configuration ``c``
   runs one problem behind configuration ``c - 1`` (a problem's ``n_samples`` repeats stay
   together). So no completion directly follows the same prompt under another
   configuration, and every configuration meets the same KV-cache reuse pattern (the
   engine keeps its cache across requests). Before its first sample each configuration
   runs one short untimed completion on an unrelated prompt, so one-time set-up costs do
   not land in its p95.
2. One JSON line per (configuration, sample, repeat) is appended to ``<out>/samples.jsonl``
   as soon as it is scored (completion text, timing, token counts, scores). Re-running the
   same command skips the lines already there: a line is "the same" when its
   ``fingerprint`` (task, model, generation settings, configuration) and its
   ``(task_id, repeat)`` match. A torn last line from an interrupted run is ignored.
3. ``<out>/summary.json`` gets, per configuration: the task's quality numbers, completion
   latency p50/p95/mean (ms), TTFT p50/p95, tokens/s (generated tokens over total completion
   time), mean prompt and reused tokens, finish reasons; ``<out>/quality_vs_latency.png``
   plots the primary quality metric against p50 latency; with a ``console`` the
   side-by-side table is printed.

Configurations are written ``"a,b;c"`` (see :func:`parse_configs`): components separated by
commas, configurations by semicolons, an empty configuration meaning plain decoding. The
pseudo-component ``no-heal`` turns token healing off for that configuration; a strategy name
(``adadec``) among the components selects that decoding strategy.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from codedec_eval.metrics import latency_summary
from codedec_eval.tasks import Sample, Task
from tqdm import tqdm

from codedec.constraint_report import constraint_rates

log = logging.getLogger(__name__)

NO_HEAL = "no-heal"
SAMPLES_FILE = "samples.jsonl"
SUMMARY_FILE = "summary.json"
PLOT_FILE = "quality_vs_latency.png"
WARMUP_PROMPT = "def warm_up(x):\n    return"


@dataclass(frozen=True)
class RunConfig:
    """One decoding configuration: engine component names and token healing on/off."""

    decoding: tuple[str, ...] = ()
    heal: bool = True
    strategy: str = "plain"  # "adadec": named among the components, as everywhere
    context: str = "none"  # cross-file context mode ("context:MODE[:TOKENS|:/N]" among the components)
    context_tokens: int | None = None
    context_fraction: int | None = None  # budget = the sample's whole context / N (":/N")

    @property
    def label(self) -> str:
        names = self.decoding + ((self.strategy,) if self.strategy != "plain" else ()) + (() if self.heal else (NO_HEAL,))
        if self.context != "none":
            budget = f":{self.context_tokens}" if self.context_tokens else ""
            budget = f":/{self.context_fraction}" if self.context_fraction else budget
            names += (f"context:{self.context}{budget}",)
        return ",".join(names) or "plain"


@dataclass(frozen=True)
class RunSettings:
    """Generation settings shared by every configuration of a run."""

    max_new_tokens: int | None = None  # None: the task's default
    temperature: float = 0.0
    n_samples: int = 1
    seed: int = 0
    max_time_ms: float | None = None
    max_prompt_tokens: int | None = None  # None: the model's context minus max_new_tokens


def parse_configs(spec: str | None) -> list[RunConfig]:
    """``"a,b;c"`` -> ``[RunConfig(("a","b")), RunConfig(("c",))]``; ``""``/None -> ``[plain]``.

    Names are validated by the engine's registry (ValueError for unknown ones, listing the
    known); ``no-heal`` is taken out and sets ``heal=False``; ``context:MODE``,
    ``context:MODE:TOKENS`` or ``context:MODE:/N`` sets the cross-file context mode and budget
    (``codedec.context.crossfile``; ``/N``: each sample's whole context block over N, i.e. N x
    compression). Duplicate configurations are kept once, in order.
    """
    from codedec.context.crossfile import check_mode
    from codedec.decoding import parse_decoding
    from codedec.settings import split_strategy

    configs: list[RunConfig] = []
    for part in (spec or "").split(";"):
        names = [n.strip() for n in part.split(",") if n.strip()]
        heal = NO_HEAL not in names
        context, tokens, fraction = "none", None, None
        for name in [n for n in names if n.startswith("context:")]:
            _, mode, *rest = name.split(":")
            context = check_mode(mode)
            budget = rest[0] if len(rest) == 1 else "x" if rest else ""
            if budget.startswith("/") and budget[1:].isdigit() and int(budget[1:]) > 0:
                fraction = int(budget[1:])
            elif budget.isdigit():
                tokens = int(budget)
            elif budget:
                raise ValueError(f"{name!r}: write context:MODE, context:MODE:TOKENS or context:MODE:/N")
        names = [n for n in names if not n.startswith("context:")]
        names, strategy = split_strategy([n for n in names if n != NO_HEAL])
        config = RunConfig(parse_decoding(names), heal, strategy or "plain", context, tokens, fraction)
        if config not in configs:
            configs.append(config)
    return configs


def _fingerprint(task: Task, model: str, settings: RunSettings, config: RunConfig) -> str:
    config_dict = asdict(config)
    for key, default in (("strategy", "plain"), ("context", "none"), ("context_tokens", None),
                         ("context_fraction", None)):
        if config_dict[key] == default:  # runs from before these existed keep their fingerprints
            del config_dict[key]
    blob = json.dumps([task.describe(), model, asdict(settings), config_dict], sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a ``samples.jsonl`` ([] when it does not exist); a torn line (an interrupted
    run) is skipped with a warning."""
    path = Path(path)
    rows = []
    if not path.exists():
        return rows
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                log.warning("%s:%d: ignoring a torn line (interrupted run?)", path, number)
    return rows


def samples_by_config(paths: Sequence[str | Path]) -> dict[str, dict[str, dict[str, Any]]]:
    """config label -> task id -> the first-repeat row, from one or more ``samples.jsonl`` files
    (a later file's row replaces an earlier one's for the same config and task)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for path in paths:
        for row in read_rows(path):
            if row.get("repeat", 0) == 0:
                out.setdefault(row["config"], {})[row["task_id"]] = row
    return out


def _schedule(configs: Sequence[RunConfig], samples: Sequence[Sample],
              n: int) -> list[tuple[RunConfig, Sample, int]]:
    """All (config, sample, repeat) jobs, configuration ``c`` lagging one problem behind ``c - 1``."""
    units = [(s, k) for s in samples for k in range(n)]
    keyed = [((u + c * n, c), config, s, k) for c, config in enumerate(configs) for u, (s, k) in enumerate(units)]
    keyed.sort(key=lambda job: job[0])
    return [(config, s, k) for _, config, s, k in keyed]


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, 2)
        return f.read(1) == b"\n"


def _seed(settings: RunSettings, task_id: str, repeat: int) -> int | None:
    if settings.temperature <= 0:
        return None
    return (zlib.crc32(f"{task_id}/{repeat}".encode()) + settings.seed) % (2**31)


def _whole_context(engine: Any, sample: Sample) -> int:
    """Tokens of ``sample``'s whole cross-file context as the prompt would show it (0: none given)."""
    from codedec.context.crossfile import CrossFile
    from codedec.context.repository import ContextChunk

    if not sample.context:
        return 0
    chunks = [ContextChunk(c["path"], c["text"], "given") for c in sample.context]
    return len(CrossFile(engine.preset, engine.tokenizer).render(chunks, sample.shown_path, sample.repo_name))


def run_eval(task: Task, engine: Any, configs: Sequence[RunConfig], settings: RunSettings, out_dir: str | Path,
             *, progress: bool = True, console: Any = None, plot: bool = True) -> dict[str, Any]:
    """Generate, score and summarize ``task`` under every configuration (see the module docstring).

    ``engine`` is a ``codedec.engine.Engine``; completions go through the service pipeline the
    editors use (``codedec.complete``: prompt assembly, per-document cache and PIE — the document
    key is the sample's file, else the problem: unrelated problems never share a cache —, editor
    post-processing, single-line mode for
    single-line tasks). Returns the summary dict written to ``summary.json``. Raises ValueError
    for bad settings or unknown decoding components.
    """
    from codedec.complete import complete
    from codedec.service import CompletionService
    from codedec.settings import ServerSettings

    if settings.n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {settings.n_samples}")
    if settings.n_samples > 1 and settings.temperature <= 0:
        log.warning("n_samples=%d with greedy decoding: the repeats will be identical", settings.n_samples)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    samples_path = out / SAMPLES_FILE
    model = engine.name
    max_new = settings.max_new_tokens or task.max_new_tokens
    context = int(engine.preset.get("context_tokens") or 2048)
    max_prompt = settings.max_prompt_tokens or max(16, context - max_new)
    prints = {c: _fingerprint(task, model, settings, c) for c in configs}
    done = {(r.get("fingerprint"), r.get("task_id"), r.get("repeat")) for r in read_rows(samples_path)}
    samples = task.samples()
    jobs = _schedule(configs, samples, settings.n_samples)
    pending = [(c, s, k) for c, s, k in jobs if (prints[c], s.task_id, k) not in done]
    if len(pending) < len(jobs):
        log.info("resuming: %d of %d samples already in %s", len(jobs) - len(pending), len(jobs), samples_path)
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(pending), disable=not progress, unit="sample",
               desc=f"{task.name} [{model}]", dynamic_ncols=True)
    warmed: set[RunConfig] = set()
    whole: dict[str, int] = {}  # task id -> tokens of its whole cross-file context block
    import torch

    # A fixed thread count: configurations compared side by side must not differ by the load.
    service = CompletionService(engine, warmup=None, threads=torch.get_num_threads())
    with open(samples_path, "a", encoding="utf-8") as sink, bar:
        if sink.tell() > 0 and not _ends_with_newline(samples_path):
            sink.write("\n")  # close a torn line so the next row starts clean
        for config, sample, repeat in pending:
            bar.set_postfix_str(config.label, refresh=False)
            context_tokens = config.context_tokens
            if config.context_fraction:
                if sample.task_id not in whole:  # once per sample, not per configuration
                    whole[sample.task_id] = _whole_context(engine, sample)
                context_tokens = -(-whole[sample.task_id] // config.context_fraction)
            knobs = ServerSettings(decoding=config.decoding, heal=config.heal, strategy=config.strategy,
                                   context=config.context, context_tokens=context_tokens,
                                   max_tokens=max_new,
                                   temperature=settings.temperature, time_budget_ms=settings.max_time_ms,
                                   max_prompt_tokens=max_prompt, seed=_seed(settings, sample.task_id, repeat))
            if config not in warmed:  # one-time costs (processor tables, lazy inits) stay out of p95
                complete(service, WARMUP_PROMPT, settings=knobs, max_tokens=4, doc="\0warmup")
                warmed.add(config)
            completion = complete(service, sample.prefix, sample.suffix, settings=knobs,
                                  single_line=task.single_line, stop_strings=task.stop_strings,
                                  path=sample.path, doc=sample.path or f"{task.name}:{sample.task_id}",
                                  context_chunks=sample.context, repo_name=sample.repo_name,
                                  current_path=sample.shown_path)
            row = {
                "fingerprint": prints[config], "config": config.label, "task_id": sample.task_id,
                "repeat": repeat, **sample.meta, "completion": completion.text,
                "raw_completion": completion.raw_text,  # before the editor post-processing
                "new_tokens": len(completion.token_ids), "forwards": completion.forwards,
                "prompt_tokens": completion.prompt_tokens,
                "reused_tokens": completion.reused_tokens, "edit_rotated": completion.stats.get("edit_rotated", 0),
                "ttft_ms": completion.ttft_ms,
                "total_ms": completion.total_ms, "ms_per_token": completion.ms_per_token,
                "finish_reason": completion.finish_reason, **task.score(sample, completion.text),
            }
            if completion.stats.get("constraints"):  # what each constraint really did for this row
                row["constraints"] = completion.stats["constraints"]
            if completion.stats.get("context"):  # the repository block: mode, chunks, tokens, ms
                row["context"] = completion.stats["context"]
            if completion.stats.get("strategy_stats"):  # adadec: steps, pauses
                row["strategy_stats"] = completion.stats["strategy_stats"]
            sink.write(json.dumps(row, ensure_ascii=False) + "\n")
            sink.flush()
            bar.update(1)
    service.close()
    summary = summarize(task, model, settings, configs, prints, read_rows(samples_path), {s.task_id for s in samples})
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, default=_json_default))
    from codedec_eval.report import plot_quality_vs_latency, render_table

    if plot:
        plot_quality_vs_latency(summary, out / PLOT_FILE)
    if console is not None:
        console.print(render_table(summary))
    return summary


def summarize(task: Task, model: str, settings: RunSettings, configs: Sequence[RunConfig],
              prints: dict[RunConfig, str], rows: Sequence[dict[str, Any]], task_ids: set[str]) -> dict[str, Any]:
    """The summary of the rows of ``configs`` whose task_id is among ``task_ids``."""
    per_config: dict[str, Any] = {}
    for config in configs:
        mine = [r for r in rows if r.get("fingerprint") == prints[config] and r.get("task_id") in task_ids]
        total_ms = [float(r["total_ms"]) for r in mine]
        new_tokens = sum(int(r["new_tokens"]) for r in mine)
        per_config[config.label] = {
            "decoding": list(config.decoding), "heal": config.heal, "n": len(mine),
            "quality": task.summarize(mine),
            "latency_ms": latency_summary(total_ms),
            "ttft_ms": latency_summary([float(r["ttft_ms"]) for r in mine]),
            "tokens_per_s": 1000.0 * new_tokens / sum(total_ms) if sum(total_ms) > 0 else 0.0,
            "mean_prompt_tokens": sum(int(r["prompt_tokens"]) for r in mine) / len(mine) if mine else 0.0,
            "mean_reused_tokens": sum(int(r["reused_tokens"]) for r in mine) / len(mine) if mine else 0.0,
            "mean_new_tokens": new_tokens / len(mine) if mine else 0.0,
            "finish_reasons": dict(Counter(r["finish_reason"] for r in mine)),
        }
        constraints = constraint_rates(mine)
        if constraints:
            per_config[config.label]["constraints"] = constraints
        totals: Counter = Counter()  # the strategy's numeric stats summed over the rows
        for r in mine:
            totals.update({k: v for k, v in (r.get("strategy_stats") or {}).items()
                           if isinstance(v, int | float) and not isinstance(v, bool)})
        steps = int(totals["steps"])
        if config.strategy != "plain" and steps:
            summary: dict[str, Any] = {"name": config.strategy, "steps": steps}
            if config.strategy == "adadec":  # the share of steps that paused to look ahead
                summary.update(paused=int(totals["paused"]), paused_pct=100.0 * totals["paused"] / steps)
            elif config.strategy == "suffix":  # speculation: tokens per model forward, accepted draft tokens
                summary.update(tokens=int(totals["tokens"]), forwards=int(totals["forwards"]),
                               accepted=int(totals["accepted"]),
                               tokens_per_forward=totals["tokens"] / totals["forwards"] if totals["forwards"] else 0.0)
            per_config[config.label]["strategy"] = summary
    return {"task": task.describe(), "primary": task.primary, "model": model, "settings": asdict(settings),
            "configs": per_config}


def _json_default(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    return str(value)
