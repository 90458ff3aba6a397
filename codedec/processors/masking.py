"""Row helpers for processors that mask or nudge a few vocabulary entries per step.

Why not plain torch ops: on a busy CPU, torch runs element-wise ops over a 49k-entry row on its
intra-op thread pool, and waking those threads cost 10+ ms per op in our measurements (2 cores,
other processes running) — more than the whole mask. NumPy does the same work single-threaded in
tens of microseconds. So a float32 CPU row is edited through a NumPy view of a copy; any other
row (bf16, CUDA) takes the torch path, where the thread pool or the device is the right tool.
"""

from __future__ import annotations

import numpy as np
import torch

_NUMPY_DTYPES = (torch.float32, torch.float64, torch.float16)


def numpy_ok(t: torch.Tensor) -> bool:
    return t.device.type == "cpu" and t.dtype in _NUMPY_DTYPES


def writable_copy(logits: torch.Tensor) -> torch.Tensor:
    """A copy of ``logits`` to edit in place (NumPy-backed when ``numpy_ok``)."""
    if numpy_ok(logits):
        return torch.from_numpy(logits.detach().numpy().copy())
    return logits.clone()


def as_numpy(row: torch.Tensor) -> np.ndarray | None:
    """A NumPy view of a CPU row (None for rows NumPy cannot view: bf16, CUDA)."""
    return row.detach().numpy() if numpy_ok(row) else None


def mask_row_(row: torch.Tensor, allowed: np.ndarray) -> None:
    """Set the entries of ``row`` [V] that ``allowed`` (bool [>= V] or shorter: the rest refused)
    does not allow to -inf, in place."""
    v = row.shape[-1]
    if allowed.shape[0] >= v:
        keep = allowed[:v]
    else:
        keep = np.zeros(v, dtype=np.bool_)
        keep[: allowed.shape[0]] = allowed
    arr = as_numpy(row)
    if arr is not None:
        arr[~keep] = -np.inf
    else:
        row.masked_fill_(torch.from_numpy(~keep).to(row.device), float("-inf"))


def add_at_(row: torch.Tensor, ids: np.ndarray, amount: float) -> None:
    """``row[ids] += amount`` in place (ids within the row)."""
    if ids.size == 0 or amount == 0.0:
        return
    arr = as_numpy(row)
    if arr is not None:
        arr[ids] += amount
    else:
        row[torch.from_numpy(ids).to(row.device)] += amount
