"""llama.cpp-style block products for q4 decode rows on AVX2 CPUs: Q4_1 / Q8_0 weights against
activations rounded to 8 bits per block of 32 (``codedec/csrc/q4q8.cpp``).

Why: at one row (every decode step, the first token while typing) torch's int4 CPU kernel goes
through the 4-bit weights at ~6 GB/s — compute-bound on unpacking into bf16 — against ~27 GB/s of
memory bandwidth, and it is the largest share of a q4 decode forward (benchmarks/RESULTS.md,
E14). Rounding the activations too lets the inner loop stay in integers (``maddubs``), as
llama.cpp's Q4_1 x Q8_1 and Q8_0 x Q8_0 dot products do.

The arithmetic (:func:`q4_1_mm_reference` / :func:`q8_0_mm_reference` are its torch twins, what
the tests hold the kernel to): per row r of x [R, K] and block b of 32, s = max|x| / 127 and
xq = round(x / s) (half to even) in -127..127; then

- Q4_1 (w = d q + m, q in 0..15): y[r, n] = sum_b d s (q . xq) + m s sum(xq)
- Q8_0 (w = d q, q in -127..127):  y[r, n] = sum_b d s (q . xq)

with d and m in fp16 (as the GGUF stores them). Each output depends on its own row of x only and
is computed by the same operations whatever R is: a draft tree's rows equal one-token decodes bit
for bit, which speculation's exactness needs.

What it is not: exact against fp32 (8-bit activations: relative error ~1/254 per block, the
same rounding llama.cpp does), nor always there. The source is compiled once per machine with
torch's extension builder (g++, ninja; cached under ``~/.cache/torch_extensions``); without AVX2,
a compiler, or with ``CODEDEC_Q8KERNEL=0``, :func:`available` is False and the int4 layers use
torch's kernel as before.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import torch

log = logging.getLogger(__name__)

QK = 32  # weights per block
Q4_1_BYTES = 20  # fp16 d, fp16 m, 16 bytes of nibbles
Q8_0_BYTES = 34  # fp16 d, 32 int8
SOURCE = Path(__file__).parent / "csrc" / "q4q8.cpp"

USE = True  # read at every call by codedec.quant's layers: use(False) sends them to torch's kernel
FUSED = True  # codedec.fastpath's direct pass runs a layer's decode rows as layer_pre / layer_post
_lock = threading.Lock()
_state: dict = {}  # "ok": bool once the build was tried, "why": the reason when not


def available() -> bool:
    """Whether the kernel can run here (built on first call: tens of seconds, once per machine)."""
    with _lock:
        if "ok" not in _state:
            _state["ok"], _state["why"] = _build()
            if not _state["ok"]:
                log.info("q8 kernel not used (%s): q4 decode rows use torch's int4 kernel", _state["why"])
        return _state["ok"]


def use(on: bool) -> None:
    """Route q4 decode rows through this kernel (``on``, the default where it is available) or
    through torch's int4 kernel (benchmarks and tests compare the two on one loaded model)."""
    global USE
    USE = bool(on)


def use_fused(on: bool) -> None:
    """Let ``codedec.fastpath`` run whole layers through :func:`layer_pre` / :func:`layer_post`
    (``on``, the default) or op by op around this kernel's products (benchmarks compare them)."""
    global FUSED
    FUSED = bool(on)


def why_unavailable() -> str | None:
    """Why :func:`available` is False (None when it is True or was not asked yet)."""
    return None if _state.get("ok", True) else _state.get("why")


def _build() -> tuple[bool, str]:
    if os.environ.get("CODEDEC_Q8KERNEL", "1") == "0":
        return False, "CODEDEC_Q8KERNEL=0"
    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        return False, f"the CPU has no AVX2 (torch reports {torch.backends.cpu.get_cpu_capability()})"
    if hasattr(torch.ops, "codedec_q8") and hasattr(torch.ops.codedec_q8, "q4_1_mm"):
        return True, ""
    try:
        from torch.utils import cpp_extension

        log.info("building codedec's q8 kernel (once per machine)")
        # -fopenmp: ATen's parallel_for is inline OpenMP; the extension then shares torch's own
        # libgomp (same soname, already loaded) and its threads, not a second pool.
        # -ffp-contract=off: no fused multiply-adds but the written ones, whatever the tile size
        cpp_extension.load(name="codedec_q8", sources=[str(SOURCE)], is_python_module=False, verbose=False,
                           extra_cflags=["-O3", "-mavx2", "-mfma", "-mf16c", "-fopenmp", "-ffp-contract=off"], extra_ldflags=["-fopenmp"])
    except Exception as err:  # noqa: BLE001 - no compiler, no ninja: the torch kernel still works
        return False, f"building {SOURCE.name} failed: {type(err).__name__}: {str(err)[:300]}"
    return True, ""


def _halves(t: torch.Tensor) -> torch.Tensor:
    """fp32 [N, B] -> its fp16 bytes [N, B, 2] (uint8)."""
    return t.to(torch.float16).contiguous().view(torch.uint8).view(*t.shape, 2)


def pack_q4_1(q: torch.Tensor, d: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Q4_1 blocks for levels ``q`` [N, K] in 0..15, scales ``d`` and offsets ``m`` [N, K/32]
    (w = d q + m): uint8 [N, K/32 * 20]."""
    n, k = q.shape
    qb = q.to(torch.uint8).reshape(n, k // QK, 2, QK // 2)  # element j and j + 16 share a byte
    nibbles = qb[:, :, 0] | (qb[:, :, 1] << 4)  # [N, B, 16]
    return torch.cat([_halves(d), _halves(m), nibbles], dim=-1).reshape(n, -1).contiguous()


def pack_q8_0(q: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Q8_0 blocks for levels ``q`` [N, K] in -127..127 and scales ``d`` [N, K/32] (w = d q):
    uint8 [N, K/32 * 34]."""
    n, k = q.shape
    levels = q.to(torch.int8).reshape(n, k // QK, QK).view(torch.uint8)  # [N, B, 32]
    return torch.cat([_halves(d), levels], dim=-1).reshape(n, -1).contiguous()


def q4_1_mm(x: torch.Tensor, blocks: torch.Tensor, n: int) -> torch.Tensor:
    """x [R, K] fp32 times the Q4_1 ``blocks`` of an [n, K] weight, transposed: [R, n] fp32."""
    return torch.ops.codedec_q8.q4_1_mm(x.contiguous(), blocks, n)


def q8_0_mm(x: torch.Tensor, blocks: torch.Tensor, n: int) -> torch.Tensor:
    """x [R, K] fp32 times the Q8_0 ``blocks`` of an [n, K] weight, transposed: [R, n] fp32."""
    return torch.ops.codedec_q8.q8_0_mm(x.contiguous(), blocks, n)


def layer_pre(x: torch.Tensor, norm_w: torch.Tensor, eps: float, qkv: torch.Tensor, cos: torch.Tensor,
              sin_signed: torch.Tensor, hq: int, hk: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A Llama layer's decode rows up to attention, in one call: x [P, H] fp32 -> RMSNorm ->
    joint q|k|v (Q4_1 ``qkv`` blocks) -> RoPE on q and k (``cos``, ``sin_signed`` [P, D]: the
    first half of sin negated, ``x * cos + roll(x, D/2) * sin_signed``) -> q [1, Hq, P, D], k and
    v [1, Hkv, P, D]. :func:`layer_pre_reference` is its twin."""
    d = cos.shape[-1]
    q, k, v = torch.ops.codedec_q8.layer_pre(x.contiguous(), norm_w, eps, qkv, (hq + 2 * hk) * d,
                                             cos.reshape(-1, d).contiguous(), sin_signed.reshape(-1, d).contiguous(),
                                             hq, hk)
    return q, k, v


def layer_post(x: torch.Tensor, o: torch.Tensor, o_w: torch.Tensor, norm_w: torch.Tensor, eps: float,
               gate_up: torch.Tensor, n_gate: int, down: torch.Tensor) -> torch.Tensor:
    """The rest of the layer, in one call: attention output o [1, Hq, P, D] -> o_proj (Q4_1
    ``o_w``) + residual x [P, H] -> RMSNorm -> joint gate|up -> SiLU(gate) * up -> down +
    residual: [P, H] fp32. :func:`layer_post_reference` is its twin."""
    return torch.ops.codedec_q8.layer_post(x.contiguous(), o, o_w, norm_w, eps, gate_up, n_gate, down)


def _rms_reference(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def layer_pre_reference(x, norm_w, eps, qkv_levels, cos, sin_signed, hq, hk):
    """:func:`layer_pre`'s twin; ``qkv_levels``: (q, d, m) of the joint projection."""
    p, d = x.shape[0], cos.shape[-1]
    heads = q4_1_mm_reference(_rms_reference(x, norm_w, eps), *qkv_levels).view(p, -1, d).transpose(0, 1)
    qk = heads[: hq + hk]
    qk = qk * cos.reshape(1, p, d) + qk.roll(d // 2, -1) * sin_signed.reshape(1, p, d)
    return qk[:hq][None], qk[hq:][None], heads[hq + hk:][None]


def layer_post_reference(x, o, o_levels, norm_w, eps, gate_up_levels, n_gate, down_levels):
    """:func:`layer_post`'s twin; ``*_levels``: (q, d, m) of each projection."""
    p = x.shape[0]
    x = x + q4_1_mm_reference(o[0].transpose(0, 1).reshape(p, -1), *o_levels)
    gate, up = q4_1_mm_reference(_rms_reference(x, norm_w, eps), *gate_up_levels).split(n_gate, dim=-1)
    return x + q4_1_mm_reference(torch.nn.functional.silu(gate) * up, *down_levels)


def quantize_rows_reference(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernel's activation rounding in torch: x [R, K] -> (xq [R, B, 32] integers as fp64,
    s [R, B] fp32)."""
    r, k = x.shape
    xb = x.float().reshape(r, k // QK, QK)
    s = xb.abs().amax(-1) / 127  # [R, B]
    inv = torch.where(s > 0, 1.0 / s, torch.zeros_like(s))
    return torch.round(xb * inv[..., None]).double(), s


def q4_1_mm_reference(x: torch.Tensor, q: torch.Tensor, d: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """:func:`q4_1_mm`'s twin (fp64 sums, fp16-rounded d and m): [R, N] fp32."""
    xq, s = quantize_rows_reference(x)  # [R, B, 32], [R, B]
    n, k = q.shape
    qb = q.double().reshape(n, k // QK, QK)  # [N, B, 32]
    dots = torch.einsum("rbi,nbi->rnb", xq, qb)  # [R, N, B]
    dd, mm = d.half().double(), m.half().double()  # [N, B]
    ss = s.double()[:, None, :]  # [R, 1, B]
    y = (dd[None] * ss * dots).sum(-1) + (mm[None] * ss * xq.sum(-1)[:, None, :]).sum(-1)
    return y.float()


def q8_0_mm_reference(x: torch.Tensor, q: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """:func:`q8_0_mm`'s twin (fp64 sums, fp16-rounded d): [R, N] fp32."""
    xq, s = quantize_rows_reference(x)
    n, k = q.shape
    dots = torch.einsum("rbi,nbi->rnb", xq, q.double().reshape(n, k // QK, QK))  # [R, N, B]
    return (d.half().double()[None] * s.double()[:, None, :] * dots).sum(-1).float()
