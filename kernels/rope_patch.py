"""Re-rotate cached RoPE keys by a per-token position change Δ, in place (PIE's KV patch).

What it is: one Triton kernel, its launcher and a pure-torch twin with the same signature
(DESIGN §1 "fast path + slow twin"), behind ``rope_patch(..., backend=...)``. A key cached at
position ``p`` holds ``s · R(p·ω) k`` (``s``: the attention scaling some RoPE kinds fold into cos/sin);
rotating it by ``R(Δ·ω)`` gives ``s · R((p+Δ)·ω) k`` — the key the model would have written at
``p + Δ`` — because rotations compose (``R(a)R(b) = R(a+b)``). So the rotation applied here is a
*unit* rotation and ``s`` must not be applied again: it is already in the cached keys.

Layouts (which dimensions form a rotating pair; ``half = rotary_dim // 2 = len(inv_freq)``):

- ``rotate_half`` (HF Llama, NeoX, Qwen, StableLM): pair ``(i, i + half)`` rotates by ``ω_i``;
- ``interleaved`` (GPT-J style): pair ``(2i, 2i + 1)`` rotates by ``ω_i``.

Partial rotary: only the first ``rotary_dim = 2 · len(inv_freq)`` dimensions rotate; the rest of
the head dimension is left untouched.

What it is not: a RoPE for queries or a fused attention kernel; values carry no position and are
never touched. The caller (``codedec.pie``) decides whether re-rotation is exact for the model's
RoPE kind (``codedec.presets.rope_is_position_linear``).

Backends: ``auto`` = Triton on CUDA tensors, torch otherwise; ``triton`` on CPU tensors runs only
under ``TRITON_INTERPRET=1`` (set when the launch happens; the kernel is JIT-wrapped lazily for
the mode in force) and is meant for fp32 tests there — the interpreter mishandles bf16.
"""

import torch
import triton
import triton.language as tl
from triton import knobs

LAYOUTS = ("rotate_half", "interleaved")
BACKENDS = ("auto", "torch", "triton")


def rope_inv_freq(theta: float, rotary_dim: int, factor: float = 1.0) -> torch.Tensor:
    """``ω_i = theta^(-2i / rotary_dim) / factor`` for ``i < rotary_dim // 2``, fp32 on CPU.

    The default RoPE (``factor = 1``) and linear position interpolation (``factor > 1``), computed
    as HF's ``compute_default_rope_parameters`` does. Prefer a model's own ``inv_freq`` buffer
    when it has one (llama3 rescaling, rounding of a bf16 buffer).
    """
    if rotary_dim <= 0 or rotary_dim % 2:
        raise ValueError(f"rotary_dim must be a positive even number, got {rotary_dim}")
    exponent = torch.arange(0, rotary_dim, 2, dtype=torch.int64).float() / rotary_dim
    return 1.0 / (theta**exponent) / factor


def _check(keys: torch.Tensor, delta: torch.Tensor | int, inv_freq: torch.Tensor, layout: str) -> torch.Tensor:
    """Validate the arguments; return Δ as an integer tensor [T] or [B, T] on ``keys.device``."""
    if keys.dim() != 4:
        raise ValueError(f"keys must be [B, H_kv, T, D], got shape {tuple(keys.shape)}")
    if not keys.is_floating_point():
        raise ValueError(f"keys must be floating point, got {keys.dtype}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    B, _, T, D = keys.shape
    half = inv_freq.numel()
    if inv_freq.dim() != 1 or half == 0 or 2 * half > D:
        raise ValueError(f"inv_freq must be 1-D with 1..{D // 2} entries (head dim {D}), got {tuple(inv_freq.shape)}")
    if isinstance(delta, int):
        delta = torch.full((T,), delta, dtype=torch.int64, device=keys.device)
    if delta.is_floating_point() or delta.is_complex() or delta.dtype == torch.bool:
        raise ValueError(f"delta must be an integer tensor, got {delta.dtype}")
    if tuple(delta.shape) not in ((T,), (B, T)):
        raise ValueError(f"delta must be [T]={T} or [B, T]=[{B}, {T}], got {tuple(delta.shape)}")
    return delta.to(keys.device)


def rope_patch_torch(
    keys: torch.Tensor, delta: torch.Tensor | int, inv_freq: torch.Tensor, layout: str = "rotate_half"
) -> torch.Tensor:
    """The pure-torch twin of ``rope_patch_triton``: rotate ``keys`` [B, H_kv, T, D] in place by
    ``delta[b, t] · inv_freq`` (fp32 math, stored back in ``keys.dtype``); return ``keys``.

    ``delta``: int, or integer tensor [T] (same Δ for every batch row) or [B, T]. ``keys`` may be
    any strided view (e.g. a T-slice of a cache layer); only its own elements are written.
    """
    delta = _check(keys, delta, inv_freq, layout)
    T = keys.shape[2]
    half = inv_freq.numel()
    if keys.numel() == 0:
        return keys
    angle = delta.reshape(-1, 1, T, 1).float() * inv_freq.to(keys.device, torch.float32)  # [B|1, 1, T, half]
    cos, sin = angle.cos(), angle.sin()
    if layout == "rotate_half":
        v1, v2 = keys[..., :half], keys[..., half : 2 * half]
    else:
        v1, v2 = keys[..., 0 : 2 * half : 2], keys[..., 1 : 2 * half : 2]
    # Copies (``.float()`` would alias an fp32 view): both halves are read before either is written.
    x1, x2 = v1.to(torch.float32, copy=True), v2.to(torch.float32, copy=True)
    v1.copy_(x1 * cos - x2 * sin)
    v2.copy_(x2 * cos + x1 * sin)
    return keys


def _rope_patch_kernel(
    k_ptr,  # keys, any strides
    delta_ptr,  # integer Δ, [B, T] by strides (stride_db = 0 for a shared [T])
    inv_freq_ptr,  # fp32 [HALF], contiguous
    T,
    H,
    stride_kb,
    stride_kh,
    stride_kt,
    stride_kd,
    stride_db,
    stride_dt,
    HALF: tl.constexpr,  # rotating pairs = rotary_dim // 2
    INTERLEAVED: tl.constexpr,  # pairs (2i, 2i+1) instead of (i, i + HALF)
    BLOCK_H: tl.constexpr,  # heads per tile (power of two)
    BLOCK_P: tl.constexpr,  # next power of two >= HALF
):
    """One program per (b, t): cos/sin of Δ·ω once, then every head's pairs, tile by tile."""
    row = tl.program_id(0)
    b = row // T
    t = row % T
    delta = tl.load(delta_ptr + b * stride_db + t * stride_dt).to(tl.float32)
    p = tl.arange(0, BLOCK_P)
    p_mask = p < HALF
    angle = delta * tl.load(inv_freq_ptr + p, mask=p_mask, other=0.0)  # [BLOCK_P]
    cos = tl.cos(angle)[None, :]
    sin = tl.sin(angle)[None, :]
    if INTERLEAVED:
        d1 = 2 * p
        d2 = 2 * p + 1
    else:
        d1 = p
        d2 = p + HALF
    base = k_ptr + b.to(tl.int64) * stride_kb + t.to(tl.int64) * stride_kt
    for h0 in range(0, H, BLOCK_H):
        h = h0 + tl.arange(0, BLOCK_H)
        mask = (h < H)[:, None] & p_mask[None, :]
        head = base + h[:, None].to(tl.int64) * stride_kh
        ptr1 = head + d1[None, :] * stride_kd
        ptr2 = head + d2[None, :] * stride_kd
        x1 = tl.load(ptr1, mask=mask, other=0.0).to(tl.float32)  # fp32 math whatever the cache dtype
        x2 = tl.load(ptr2, mask=mask, other=0.0).to(tl.float32)
        tl.store(ptr1, (x1 * cos - x2 * sin).to(k_ptr.dtype.element_ty), mask=mask)
        tl.store(ptr2, (x2 * cos + x1 * sin).to(k_ptr.dtype.element_ty), mask=mask)


_JITTED: dict[bool, object] = {}  # interpret mode -> the wrapped kernel (the mode is fixed at wrap time)


def _kernel():
    interpret = bool(knobs.runtime.interpret)
    if interpret not in _JITTED:
        _JITTED[interpret] = triton.jit(_rope_patch_kernel)
    return _JITTED[interpret]


def rope_patch_triton(
    keys: torch.Tensor, delta: torch.Tensor | int, inv_freq: torch.Tensor, layout: str = "rotate_half"
) -> torch.Tensor:
    """Launcher of the Triton kernel; same contract as ``rope_patch_torch``.

    Grid: one program per (batch row, token); each loads Δ once, computes cos/sin for the
    ``len(inv_freq)`` frequencies and rotates every head's pairs in tiles of up to 16 heads.
    CPU tensors need ``TRITON_INTERPRET=1`` (raises ``ValueError`` otherwise).
    """
    delta = _check(keys, delta, inv_freq, layout)
    if keys.device.type == "cpu" and not knobs.runtime.interpret:
        raise ValueError("the triton backend on CPU tensors needs TRITON_INTERPRET=1 (or use backend='torch')")
    B, H, T, _ = keys.shape
    if keys.numel() == 0:
        return keys
    half = inv_freq.numel()
    inv = inv_freq.to(device=keys.device, dtype=torch.float32).contiguous()
    if delta.dim() == 1:
        stride_db, stride_dt = 0, delta.stride(0)
    else:
        stride_db, stride_dt = delta.stride(0), delta.stride(1)
    _kernel()[(B * T,)](
        keys,
        delta,
        inv,
        T,
        H,
        *keys.stride(),
        stride_db,
        stride_dt,
        HALF=half,
        INTERLEAVED=layout == "interleaved",
        BLOCK_H=min(max(triton.next_power_of_2(H), 2), 16),  # >= 2: no 1-wide aranges
        BLOCK_P=max(triton.next_power_of_2(half), 2),
    )
    return keys


def rope_patch(
    keys: torch.Tensor,
    delta: torch.Tensor | int,
    inv_freq: torch.Tensor,
    layout: str = "rotate_half",
    *,
    backend: str = "auto",
) -> torch.Tensor:
    """Rotate cached keys [B, H_kv, T, D] in place from their positions ``p`` to ``p + delta``.

    ``backend``: ``auto`` (Triton for CUDA tensors, torch otherwise), ``torch`` or ``triton``.
    Returns ``keys``. Raises ``ValueError`` for bad shapes, layouts or backends.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "triton" or (backend == "auto" and keys.is_cuda):
        return rope_patch_triton(keys, delta, inv_freq, layout)
    return rope_patch_torch(keys, delta, inv_freq, layout)
