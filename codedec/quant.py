"""Weight-only int4 for the decode step on CPU, where the weights already are 4-bit.

Why: a decode step reads every weight once; on CPU its time is weight bytes over memory
bandwidth. The embedded model comes as a Q4_1 GGUF (per row, blocks of 32 weights
``w = d * q + m``, q in 0..15), which loading dequantizes to fp32: 8x the bytes it was shipped in.
Measured on the 2-core machine (SmolLM2-135M, 2 threads): 110 ms per decode forward in fp32,
31 ms with the linear layers on torch's int4 CPU kernel (``torch._weight_int4pack_mm_for_cpu``);
llama.cpp on the same GGUF: ~33 ms.

What it is: :func:`quantize_int4` replaces each ``nn.Linear`` whose fp32 weight lies exactly on
a 4-bit grid of 32-weight blocks (every block's values are ``lo + d * q`` with q in 0..15: true of
every Q4_0/Q4_1 GGUF tensor, since the quantizer puts the block's min at q=0 and max at q=15) by
an :class:`Int4Linear` holding those same q levels — no new rounding of the weights. Its forward:

- up to ``INT4_MAX_ROWS`` rows (a decode step, a verified draft tree, AdaDec's rollouts): the int4
  kernel, activations in bf16 (the kernel's fast path; per-block scale ``d`` and offset
  ``m + 8d`` in bf16), output back in the activations' dtype;
- more rows (prefill): the fp32 weight, kept (prefill is compute-bound, where fp32 GEMM is 1.7x
  faster than the int4 kernel at 256 rows).

A layer on an 8-bit grid of 32-weight blocks (``w = d * q``, q in -127..127: a Q8_0 tensor, such
as the embedded model's tied embedding / lm_head, 49152 x 576, the largest single matrix) becomes
an :class:`Int8SplitLinear`: the same levels as two int4 products. Anything else (any model from
a safetensors checkpoint) is left in fp32: this mode never quantizes what was not quantized.

Which kernel: on an AVX2 CPU where ``codedec.q8kernel`` builds, decode rows go through it
instead — the same levels as Q4_1 / Q8_0 blocks, activations rounded to 8 bits per block as
llama.cpp does, ~1.4-2x faster than torch's int4 kernel at one row and no slower at a few
(benchmarks/RESULTS.md, E14; ``codedec.fastpath`` also runs whole layers in it); elsewhere, or with ``codedec.q8kernel.use(False)`` /
``CODEDEC_Q8KERNEL=0``, torch's int4 kernel as above. Either way a row's result does not depend
on the other rows of the call.

What it is not: exact. Decode rows see bf16-rounded activations and scales (relative error
~2^-9, like bf16 weights), or 8-bit activations with the q8 kernel; ``precision="fp32"`` is the
exact mode the tests use. Quality against fp32 is measured (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from torch import nn

from codedec import q8kernel

log = logging.getLogger(__name__)

GROUP = 32  # weights per block (Q4_0 / Q4_1)
INT4_MAX_ROWS = 64  # up to this many rows (a draft tree of <= 32 nodes, rollouts) use the int4 kernel
GRID_TOL = 1e-3  # max distance of (w - lo) / d from an integer, in q units, to count as on the grid


def on_int4_grid(weight: torch.Tensor, group: int = GROUP) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """(q [N, K] int32 in 0..15, d [N, K/group], lo [N, K/group]) such that ``weight ==
    lo + d * q`` blockwise (to ``GRID_TOL`` of a level), or None when ``weight`` [N, K] is not on
    such a grid (or K is not a multiple of ``group``)."""
    n, k = weight.shape
    if k % group or n % 16:  # the int4 packing works on 16-row tiles
        return None
    w = weight.detach().float().reshape(n, k // group, group)  # [N, K/g, g]
    lo, hi = w.amin(-1), w.amax(-1)  # [N, K/g]
    d = (hi - lo) / 15
    safe = torch.where(d > 0, d, torch.ones_like(d))
    x = (w - lo[..., None]) / safe[..., None]  # [N, K/g, g]: levels 0..15 when on the grid
    q = torch.round(x)
    if float((x - q).abs().max()) > GRID_TOL:
        return None
    return q.clamp(0, 15).to(torch.int32).reshape(n, k), d, lo


class _GridLinear(nn.Module):
    """What the grid layers share: ``weight`` (fp32, for prefill rows) and ``bias`` are the
    original layer's; up to ``INT4_MAX_ROWS`` rows go through :meth:`products`, more through
    the fp32 weight. ``blocks``: the levels as ``codedec.q8kernel`` blocks (None where that
    kernel is not available)."""

    _kernel = None  # q8kernel.q4_1_mm or q8_0_mm, for ``blocks``

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight
        self.bias = linear.bias
        self.register_buffer("blocks", None, persistent=False)

    def _products(self, flat: torch.Tensor) -> torch.Tensor:
        """torch's int4 kernel: bf16 rows [rows, K] -> [rows, N]."""
        raise NotImplementedError

    def products(self, flat: torch.Tensor) -> torch.Tensor:
        """Rows [rows, K] (rows <= ``INT4_MAX_ROWS``) -> fp32 [rows, N], no bias: the q8 kernel
        when there are ``blocks`` and it is in use (``q8kernel.use``), else torch's int4 kernel."""
        if self.blocks is not None and q8kernel.USE:
            return self._kernel(flat.float(), self.blocks, self.out_features)
        return self._products(flat.to(torch.bfloat16)).float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // self.in_features
        if rows > INT4_MAX_ROWS:
            return nn.functional.linear(x, self.weight, self.bias)
        y = self.products(x.reshape(rows, self.in_features)).to(x.dtype)  # [rows, N]
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)


class Int4Linear(_GridLinear):
    """An ``nn.Linear`` on a 4-bit grid: see the module docstring."""

    def __init__(self, linear: nn.Linear, q: torch.Tensor, d: torch.Tensor, lo: torch.Tensor) -> None:
        super().__init__(linear)
        self.register_buffer("packed", torch._convert_weight_to_int4pack_for_cpu(q, 1), persistent=False)
        # the kernel computes w = (q - 8) * scale + zero: scale = d, zero = lo + 8 d; [K/g, N, 2]
        scales = torch.stack([d.t(), (lo + 8 * d).t()], dim=-1)
        self.register_buffer("scales", scales.to(torch.bfloat16).contiguous(), persistent=False)
        if q8kernel.available():
            self.register_buffer("blocks", q8kernel.pack_q4_1(q, d, lo), persistent=False)  # [N, K/32 * 20]
            self._kernel = q8kernel.q4_1_mm

    def _products(self, flat: torch.Tensor) -> torch.Tensor:
        return torch._weight_int4pack_mm_for_cpu(flat, self.packed, GROUP, self.scales)

    @classmethod
    @torch.inference_mode()
    def concat(cls, parts: list[Int4Linear]) -> Int4Linear:
        """One layer computing the outputs of ``parts`` (same input size) side by side, [rows,
        sum of their N], in one int4 product: their levels and scales concatenated (packed levels
        are stored row by row, so each part's are a slice of the joint ones: the parts are rebound
        to those views, no second copy). Decode rows only: it has no fp32 weight, so more than
        ``INT4_MAX_ROWS`` rows raise (callers use the parts then)."""
        if len({p.in_features for p in parts}) != 1 or any(type(p) is not Int4Linear for p in parts):
            raise ValueError("concat needs Int4Linear layers of one input size")
        joint = cls.__new__(cls)
        nn.Module.__init__(joint)
        joint.in_features, joint.out_features = parts[0].in_features, sum(p.out_features for p in parts)
        joint.weight = None
        biases = [p.bias for p in parts]
        joint.bias = None if all(b is None for b in biases) else torch.cat(
            [b if b is not None else torch.zeros(p.out_features) for p, b in zip(parts, biases, strict=True)])
        joint.register_buffer("packed", torch.cat([p.packed for p in parts]), persistent=False)  # [N, K/2]
        joint.register_buffer("scales", torch.cat([p.scales for p in parts], dim=1).contiguous(),
                              persistent=False)  # [K/g, N, 2]
        blocks = all(p.blocks is not None for p in parts)
        joint.register_buffer("blocks", torch.cat([p.blocks for p in parts]) if blocks else None, persistent=False)
        if blocks:
            joint._kernel = q8kernel.q4_1_mm
        at = 0
        for p in parts:
            p.packed = joint.packed[at: at + p.out_features]
            if blocks:
                p.blocks = joint.blocks[at: at + p.out_features]
            at += p.out_features
        return joint

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight is None and x.numel() // self.in_features > INT4_MAX_ROWS:
            raise ValueError(f"a joint int4 layer takes at most {INT4_MAX_ROWS} rows")
        return super().forward(x)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int4 group {GROUP}"


def on_int8_grid(weight: torch.Tensor, group: int = GROUP) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(q [N, K] int32 in -127..127, d [N, K/group]) such that ``weight == d * q`` blockwise (a
    Q8_0 tensor: the quantizer sets d = the block's max |w| / 127), or None."""
    n, k = weight.shape
    if k % group or n % 16:  # the int4 packing works on 16-row tiles
        return None
    w = weight.detach().float().reshape(n, k // group, group)  # [N, K/g, g]
    d = w.abs().amax(-1) / 127  # [N, K/g]
    safe = torch.where(d > 0, d, torch.ones_like(d))
    x = w / safe[..., None]
    q = torch.round(x)
    if float((x - q).abs().max()) > GRID_TOL:
        return None
    return q.clamp(-127, 127).to(torch.int32).reshape(n, k), d


class Int8SplitLinear(_GridLinear):
    """An ``nn.Linear`` on an 8-bit grid (Q8_0: the tied embedding / lm_head of the embedded
    model) as two int4 products on the same kernel: q = 16 * hi + lo with lo in 0..15 and hi in
    -8..7, so ``w = d * lo + 16 d * hi`` exactly — half the bytes of fp32 twice over, no new
    rounding of the weights. Rows as :class:`Int4Linear`."""

    def __init__(self, linear: nn.Linear, q: torch.Tensor, d: torch.Tensor) -> None:
        super().__init__(linear)
        lo = torch.remainder(q, 16)  # [N, K] in 0..15
        hi = (q - lo) // 16  # [N, K] in -8..7
        # kernel: w = (q - 8) * scale + zero. lo part: scale d, zero 8 d; hi part: q = hi + 8, scale 16 d, zero 0
        self.register_buffer("packed_lo", torch._convert_weight_to_int4pack_for_cpu(lo.to(torch.int32), 1),
                             persistent=False)
        self.register_buffer("packed_hi", torch._convert_weight_to_int4pack_for_cpu((hi + 8).to(torch.int32), 1),
                             persistent=False)
        dt = d.t()  # [K/g, N]
        self.register_buffer("scales_lo", torch.stack([dt, 8 * dt], -1).to(torch.bfloat16).contiguous(),
                             persistent=False)
        self.register_buffer("scales_hi", torch.stack([16 * dt, torch.zeros_like(dt)], -1).to(torch.bfloat16)
                             .contiguous(), persistent=False)
        if q8kernel.available():  # one Q8_0 product instead of the two int4 ones
            self.register_buffer("blocks", q8kernel.pack_q8_0(q, d), persistent=False)  # [N, K/32 * 34]
            self._kernel = q8kernel.q8_0_mm

    def _products(self, flat: torch.Tensor) -> torch.Tensor:
        y = torch._weight_int4pack_mm_for_cpu(flat, self.packed_lo, GROUP, self.scales_lo).float()  # [rows, N]
        return y + torch._weight_int4pack_mm_for_cpu(flat, self.packed_hi, GROUP, self.scales_hi).float()

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 as 2 x int4, group {GROUP}"


@dataclass
class Int4Report:
    """What :func:`quantize_int4` did: layers moved to int4, to int8 as two int4 products, and
    those left (off both grids)."""

    int4: list[str] = field(default_factory=list)
    int8: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


@torch.inference_mode()
def quantize_int4(model: nn.Module) -> Int4Report:
    """Replace, in place, every CPU fp32 ``nn.Linear`` of ``model`` whose weight is on a 4-bit
    grid by an :class:`Int4Linear`, on an 8-bit grid by an :class:`Int8SplitLinear`; the rest
    stay. Returns what moved and what stayed."""
    report = Int4Report()
    for parent_name, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not nn.Linear:
                continue
            full = f"{parent_name}.{name}" if parent_name else name
            if child.weight.device.type != "cpu" or child.weight.dtype != torch.float32:
                report.kept.append(full)
                continue
            grid = on_int4_grid(child.weight)
            if grid is not None:
                setattr(parent, name, Int4Linear(child, *grid))
                report.int4.append(full)
                continue
            grid8 = on_int8_grid(child.weight)
            if grid8 is not None:
                setattr(parent, name, Int8SplitLinear(child, *grid8))
                report.int8.append(full)
                continue
            report.kept.append(full)
    log.info("int4 decode weights: %d linear layers, %d int8 (%d left in fp32: %s)", len(report.int4),
             len(report.int8), len(report.kept),
             ", ".join(report.kept[:4]) + (" ..." if len(report.kept) > 4 else ""))
    return report
