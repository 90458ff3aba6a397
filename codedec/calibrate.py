"""AdaDec's entropy threshold per model: learned from code the model is teacher-forced through.

What it is (``codedec calibrate --model M``), as the AdaDec paper learns its threshold:

1. data: windows of real code from a pip-installed package (default ``click``; never a test set —
   HumanEval's canonical solutions are test data), ``window_tokens`` tokens each, in a seeded
   order over the package's files;
2. one forward per window (teacher forcing): at each position t, the entropy H_t of the model's
   next-token distribution and the label y_t = 1 when greedy's token (the argmax) is not the
   reference's next token;
3. a logistic regression p(y = 1 | H) = sigmoid(a * H + b) (Newton's method on the two
   parameters); the threshold is its decision boundary tau = -b / a: where the model is more
   likely wrong than right, AdaDec pauses;
4. stored as JSON under ``cache_dir()/calibration/`` keyed by where the model's weights were read
   from (``LoadedModel.source``); ``load_tau`` reads it back for ``eval`` and ``serve`` (through
   ``make_strategy``). Without a stored threshold AdaDec uses ``adadec.FALLBACK_TAU``.

What it is not: a calibration of the processed distribution (processors change the entropy where
they act; the threshold is learned on the model's own distribution, as in the paper).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from codedec.loading import cache_dir
from codedec.uncertainty import entropy_of

DEFAULT_PACKAGE = "click"


@dataclass(frozen=True)
class Calibration:
    """``tau`` (nats) = -b / a of the fitted sigmoid(a * H + b); the data it came from."""

    tau: float
    a: float
    b: float
    positions: int
    mismatch_rate: float
    package: str
    model: str
    source: str


def fit_threshold(entropies: Sequence[float], labels: Sequence[int], *, l2: float = 1e-6,
                  steps: int = 50) -> tuple[float, float, float]:
    """Logistic regression of ``labels`` (0/1) on ``entropies`` -> (tau, a, b), tau = -b / a.

    Raises ``ValueError`` when the labels are all alike or the fitted slope is not positive
    (higher entropy would not mean more mistakes: there is no threshold to learn)."""
    h = torch.tensor(entropies, dtype=torch.float64)
    y = torch.tensor(labels, dtype=torch.float64)
    if h.numel() != y.numel() or h.numel() < 2:
        raise ValueError(f"need as many labels as entropies, at least 2 (got {h.numel()} and {y.numel()})")
    if y.min() == y.max():
        raise ValueError("the labels are all alike: nothing separates right from wrong tokens")
    x = torch.stack([h, torch.ones_like(h)], dim=1)  # [N, 2]
    w = torch.zeros(2, dtype=torch.float64)
    for _ in range(steps):  # Newton's method: the log-likelihood is concave in (a, b)
        p = torch.sigmoid(x @ w)
        grad = x.T @ (p - y) + l2 * w
        hess = (x * (p * (1 - p)).unsqueeze(1)).T @ x + l2 * torch.eye(2, dtype=torch.float64)
        delta = torch.linalg.solve(hess, grad)
        w -= delta
        if float(delta.abs().max()) < 1e-10:
            break
    a, b = float(w[0]), float(w[1])
    if not a > 0:
        raise ValueError(f"the fitted slope is {a:.3g}: higher entropy does not mean more mistakes here")
    return -b / a, a, b


def package_files(package: str) -> list[Path]:
    """The ``.py`` files of an installed package (``ValueError`` when it is not installed)."""
    spec = importlib.util.find_spec(package)
    if spec is None:
        raise ValueError(f"{package} is not installed: calibration reads real code from an installed package")
    roots = list(spec.submodule_search_locations or []) or [str(Path(spec.origin).parent)]
    return sorted(p for root in roots for p in Path(root).rglob("*.py") if "test" not in p.name)


def collect(loaded, files: Sequence[Path], *, windows: int = 48, window_tokens: int = 256, seed: int = 0,
            progress: Callable[[int, int], None] | None = None) -> tuple[list[float], list[int]]:
    """(entropy, greedy-is-wrong label) at every position of ``windows`` teacher-forced windows."""
    tok, model = loaded.tokenizer, loaded.model
    rng = random.Random(seed)
    texts = [tok.encode(p.read_text(encoding="utf-8", errors="replace"), add_special_tokens=False) for p in files]
    texts = [ids for ids in texts if len(ids) >= window_tokens // 2]
    # each file gives windows in proportion to its length (at least one), at seeded offsets
    starts = [(i, rng.randrange(0, max(1, len(ids) - window_tokens))) for i, ids in enumerate(texts)
              for _ in range(max(1, len(ids) // window_tokens))]
    rng.shuffle(starts)
    entropies: list[float] = []
    labels: list[int] = []
    done = 0
    for i, start in starts:
        if done >= windows:
            break
        ids = texts[i]
        window = torch.tensor([ids[start : start + window_tokens]])  # [1, T]
        with torch.no_grad():
            logits = model(input_ids=window).logits[0, :-1].float()  # [T-1, V]: the next token after each
        ent = entropy_of(torch.log_softmax(logits, dim=-1))  # [T-1]
        wrong = logits.argmax(-1) != window[0, 1:]  # [T-1]
        entropies += ent.tolist()
        labels += wrong.long().tolist()
        done += 1
        if progress:
            progress(done, windows)
    if not entropies:
        raise ValueError("no window of code long enough in the files given")
    return entropies, labels


def calibration_path(source: str) -> Path:
    """Where the threshold of the model read from ``source`` is stored."""
    key = hashlib.sha1(str(Path(source).resolve() if source else source).encode()).hexdigest()[:16]
    return cache_dir() / "calibration" / f"{Path(source).name or 'model'}-{key}.json"


def calibrate(loaded, *, package: str = DEFAULT_PACKAGE, windows: int = 48, window_tokens: int = 256, seed: int = 0,
              progress: Callable[[int, int], None] | None = None, save: bool = True) -> Calibration:
    """Learn and (``save``) store the model's threshold (see the module docstring)."""
    h, y = collect(loaded, package_files(package), windows=windows, window_tokens=window_tokens, seed=seed,
                   progress=progress)
    tau, a, b = fit_threshold(h, y)
    cal = Calibration(tau=tau, a=a, b=b, positions=len(h), mismatch_rate=sum(y) / len(y), package=package,
                      model=loaded.name, source=loaded.source)
    if save:
        save_calibration(cal)
    return cal


def save_calibration(cal: Calibration) -> Path:
    """Store ``cal`` where ``load_tau(cal.source)`` finds it (atomically); returns the path."""
    path = calibration_path(cal.source)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{time.monotonic_ns()}")
    tmp.write_text(json.dumps(asdict(cal), indent=2) + "\n")
    tmp.replace(path)
    return path


def load_tau(source: str | None) -> float | None:
    """The stored threshold of the model read from ``source`` (None when not calibrated)."""
    if not source:
        return None
    path = calibration_path(source)
    try:
        tau = float(json.loads(path.read_text())["tau"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return tau if math.isfinite(tau) and tau >= 0 else None
