"""RoPE patch kernel: Triton == torch twin == RoPE applied at p + Δ, over odd shapes and views.

Liger-Kernel style: parity over non-power-of-two head dims and token counts, strided views, both
layouts and partial rotary. On CPU the Triton side runs under the interpreter in fp32; bf16/fp16
parity needs a CUDA device and is skipped otherwise.
"""

from __future__ import annotations

import pytest
import torch
from codedec.kernels.rope_patch import rope_inv_freq, rope_patch, rope_patch_torch, rope_patch_triton

# (head dim, rotary dim): full rotary at D = 64/80/96/128, and partial rotary (first dims only)
SHAPES = [(64, 64), (80, 80), (96, 96), (128, 128), (80, 40), (128, 32)]
LAYOUTS = ["rotate_half", "interleaved"]


def _apply_rope(x: torch.Tensor, pos: torch.Tensor, inv_freq: torch.Tensor, layout: str) -> torch.Tensor:
    """Reference RoPE as the models apply it (HF rotate_half, GPT-J rotate_every_two); x [B, H, T, D],
    pos [B, T]; only the first 2 * len(inv_freq) dims rotate."""
    half = inv_freq.numel()
    angle = pos[:, None, :, None].double() * inv_freq.double()  # [B, 1, T, half]
    rot, rest = x[..., : 2 * half].double(), x[..., 2 * half :]
    if layout == "rotate_half":
        cos, sin = torch.cat([angle.cos()] * 2, -1), torch.cat([angle.sin()] * 2, -1)
        x1, x2 = rot[..., :half], rot[..., half:]
        turned = torch.cat([-x2, x1], -1)
    else:
        cos, sin = angle.cos().repeat_interleave(2, -1), angle.sin().repeat_interleave(2, -1)
        x1, x2 = rot[..., ::2], rot[..., 1::2]
        turned = torch.stack([-x2, x1], -1).flatten(-2)
    return torch.cat([(rot * cos + turned * sin).to(x.dtype), rest], -1)


def _strided_keys(B: int, H: int, T: int, D: int, device: str, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """A T-slice of a [B, T+9, H, D]-major buffer viewed as [B, H, T, D] (non-contiguous), and the buffer."""
    buf = torch.randn(B, T + 9, H, D, device=device, dtype=dtype)
    return buf.transpose(1, 2)[:, :, 4 : 4 + T, :], buf


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("D,rotary_dim", SHAPES)
def test_triton_matches_torch_twin_on_strided_views(triton_interpret, layout, D, rotary_dim):
    torch.manual_seed(D + rotary_dim)
    B, H, T = 2, 3, 37  # nothing a power of two
    keys, buf = _strided_keys(B, H, T, D, triton_interpret)
    assert not keys.is_contiguous()
    inv = rope_inv_freq(10000.0, rotary_dim)
    delta = torch.randint(-300, 300, (B, T), device=triton_interpret)
    want_buf = buf.clone()
    rope_patch_torch(want_buf.transpose(1, 2)[:, :, 4 : 4 + T, :], delta, inv, layout)
    rope_patch_triton(keys, delta, inv, layout)
    torch.testing.assert_close(buf, want_buf, rtol=1e-5, atol=1e-5)  # also: nothing outside the view moved


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("H,T", [(20, 13), (1, 1)])
def test_shared_delta_and_head_counts(triton_interpret, layout, H, T):
    """Δ as [T] and as an int; 20 heads (more than one head tile of 16) and a single head and token."""
    torch.manual_seed(1)
    keys = torch.randn(1, H, T, 64, device=triton_interpret)
    inv = rope_inv_freq(500000.0, 64)
    delta = torch.arange(T, device=triton_interpret) - 6
    a, b, c = keys.clone(), keys.clone(), keys.clone()
    rope_patch_torch(a, delta, inv, layout)
    rope_patch_triton(b, delta, inv, layout)
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    rope_patch_triton(c, 7, inv, layout)
    torch.testing.assert_close(c, rope_patch_torch(keys.clone(), 7, inv, layout), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("D,rotary_dim", [(80, 80), (96, 48)])
def test_rotating_by_delta_equals_rope_at_shifted_positions(triton_interpret, backend, layout, D, rotary_dim):
    """R(Δ)·R(p)·k == R(p+Δ)·k, the pass-through dims untouched (what PIE relies on)."""
    torch.manual_seed(2)
    B, H, T = 2, 2, 19
    dev = triton_interpret if backend == "triton" else "cpu"
    raw = torch.randn(B, H, T, D, device=dev)
    inv = rope_inv_freq(10000.0, rotary_dim)
    pos = torch.randint(0, 200, (B, T), device=dev)
    delta = torch.randint(-pos.min().item(), 200, (B, T), device=dev)
    keys = _apply_rope(raw, pos, inv.to(dev), layout)
    rope_patch(keys, delta, inv, layout, backend=backend)
    torch.testing.assert_close(keys, _apply_rope(raw, pos + delta, inv.to(dev), layout), rtol=1e-4, atol=1e-4)


def test_delta_then_minus_delta_is_identity_and_zero_is_exact():
    torch.manual_seed(3)
    keys = torch.randn(1, 2, 11, 64)
    inv = rope_inv_freq(10000.0, 64)
    out = rope_patch(keys.clone(), 0, inv)
    assert torch.equal(out, keys)
    back = rope_patch(rope_patch(keys.clone(), 250, inv), -250, inv)
    torch.testing.assert_close(back, keys, rtol=1e-5, atol=1e-5)


def test_auto_backend_on_cpu_is_torch_and_needs_no_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    keys = torch.randn(1, 2, 5, 32)
    inv = rope_inv_freq(10000.0, 32)
    torch.testing.assert_close(rope_patch(keys.clone(), 3, inv), rope_patch_torch(keys.clone(), 3, inv))
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        rope_patch(keys, 3, inv, backend="triton")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"keys": torch.zeros(2, 5, 8)}, r"\[B, H_kv, T, D\]"),
        ({"layout": "neox"}, "layout"),
        ({"inv_freq": torch.ones(5)}, "inv_freq"),
        ({"delta": torch.zeros(4, dtype=torch.long)}, r"\[T\]"),
        ({"delta": torch.zeros(5)}, "integer"),
        ({"backend": "cuda"}, "backend"),
    ],
)
def test_misuse_raises_value_error(kwargs, match):
    args = {"keys": torch.zeros(1, 2, 5, 8), "delta": 1, "inv_freq": torch.ones(4), "layout": "rotate_half"}
    backend = kwargs.pop("backend", "torch")
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        rope_patch(args["keys"], args["delta"], args["inv_freq"], args["layout"], backend=backend)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="bf16/fp16 parity needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("D,rotary_dim", SHAPES)
def test_gpu_half_precision_parity(dtype, layout, D, rotary_dim):
    torch.manual_seed(4)
    keys, buf = _strided_keys(2, 5, 129, D, "cuda", dtype)
    inv = rope_inv_freq(10000.0, rotary_dim)
    delta = torch.randint(-1000, 1000, (2, 129), device="cuda")
    want_buf = buf.clone()
    rope_patch_torch(want_buf.transpose(1, 2)[:, :, 4:133, :], delta, inv, layout)
    rope_patch(keys, delta, inv, layout, backend="auto")
    tol = 2e-2 if dtype == torch.bfloat16 else 2e-3  # one rounding of the stored result either way
    torch.testing.assert_close(buf.float(), want_buf.float(), rtol=tol, atol=tol)
