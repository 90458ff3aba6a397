"""codedec.q8kernel: the C++ block products against their torch twins, row independence, and
the q4 layers' use of it (and of torch's kernel when it is switched off)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from codedec import q8kernel
from codedec.quant import Int4Linear, Int8SplitLinear, on_int4_grid, on_int8_grid

pytestmark = pytest.mark.skipif(not q8kernel.available(), reason=f"q8 kernel not built: {q8kernel.why_unavailable()}")

SHAPES = [(16, 32), (48, 64), (49, 96), (960, 576), (576, 1536)]  # odd N, one to 48 blocks


def q4_weights(n: int, k: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(0, 16, (n, k), generator=g)
    d = torch.rand(n, k // 32, generator=g) * 0.02 + 1e-4
    m = -8 * d + torch.randn(n, k // 32, generator=g) * 1e-3
    return q, d, m


@pytest.mark.parametrize("n,k", SHAPES)
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 9])
def test_q4_1_matches_its_twin(n, k, rows):
    q, d, m = q4_weights(n, k)
    x = torch.randn(rows, k, generator=torch.Generator().manual_seed(1)) * 3
    got = q8kernel.q4_1_mm(x, q8kernel.pack_q4_1(q, d, m), n)
    want = q8kernel.q4_1_mm_reference(x, q, d, m)
    assert got.shape == (rows, n) and got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))


@pytest.mark.parametrize("n,k", SHAPES)
@pytest.mark.parametrize("rows", [1, 4, 7])
def test_q8_0_matches_its_twin(n, k, rows):
    g = torch.Generator().manual_seed(2)
    q = torch.randint(-127, 128, (n, k), generator=g)
    d = torch.rand(n, k // 32, generator=g) * 0.01
    x = torch.randn(rows, k, generator=g)
    got = q8kernel.q8_0_mm(x, q8kernel.pack_q8_0(q, d), n)
    want = q8kernel.q8_0_mm_reference(x, q, d)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))


def test_the_twin_is_the_dequantized_product_up_to_activation_rounding():
    """The twin is not a restatement of the kernel's bug: against fp32 weights it is off only by
    8-bit activations (and the fp16 scales), and exact when x already is on each block's grid."""
    n, k = 64, 128
    q, d, m = q4_weights(n, k)
    d, m = d.half().float(), m.half().float()  # scales as the blocks store them
    w = (d.repeat_interleave(32, 1) * q + m.repeat_interleave(32, 1))  # [N, K]
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, k, generator=g)
    rel = (q8kernel.q4_1_mm_reference(x, q, d, m) - x @ w.t()).abs().max() / (x @ w.t()).abs().max()
    assert 0 < float(rel) < 2e-2
    s = torch.rand(3, k // 32, generator=g) + 0.5  # x = s * integers with max |.| 127: no rounding
    ints = torch.randint(-127, 128, (3, k), generator=g).float()
    ints[:, ::32] = 127
    x = (ints.reshape(3, -1, 32) * (s[..., None] / 127)).reshape(3, k) * 127
    torch.testing.assert_close(q8kernel.q4_1_mm_reference(x, q, d, m), x @ w.t(), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("n,k", [(49, 96), (960, 576)])
def test_a_row_gives_the_same_bits_alone_and_among_others(n, k):
    """Speculation's exactness: a draft tree's rows must equal one-token decodes bit for bit."""
    q, d, m = q4_weights(n, k)
    blocks = q8kernel.pack_q4_1(q, d, m)
    x = torch.randn(9, k, generator=torch.Generator().manual_seed(4))
    together = q8kernel.q4_1_mm(x, blocks, n)
    for i in range(9):
        assert torch.equal(q8kernel.q4_1_mm(x[i:i + 1], blocks, n)[0], together[i])
    q8 = torch.randint(-127, 128, (n, k), generator=torch.Generator().manual_seed(5))
    b8 = q8kernel.pack_q8_0(q8, d)
    together = q8kernel.q8_0_mm(x, b8, n)
    assert all(torch.equal(q8kernel.q8_0_mm(x[i:i + 1], b8, n)[0], together[i]) for i in range(9))


def test_bad_inputs_are_refused():
    q, d, m = q4_weights(16, 64)
    blocks = q8kernel.pack_q4_1(q, d, m)
    with pytest.raises(RuntimeError, match="multiple of 32"):
        q8kernel.q4_1_mm(torch.randn(1, 48), blocks, 16)
    with pytest.raises(RuntimeError, match="Q4_1 blocks"):
        q8kernel.q4_1_mm(torch.randn(1, 64), blocks, 17)
    with pytest.raises(RuntimeError, match="fp32"):
        q8kernel.q4_1_mm(torch.randn(1, 64).double(), blocks, 16)


def grid_linear(n: int, k: int, int8: bool = False) -> nn.Linear:
    """An ``nn.Linear`` whose weight lies on a Q4_1 (or Q8_0) grid (``test_quant``'s weights)."""
    from test_quant import grid_weight, q8_weight

    lin = nn.Linear(k, n, bias=False)
    with torch.no_grad():
        lin.weight.copy_((q8_weight if int8 else grid_weight)(n, k)[0])
    return lin


@pytest.mark.parametrize("int8", [False, True])
def test_the_q4_layers_use_the_kernel_and_torch_s_when_switched_off(int8):
    lin = grid_linear(64, 96, int8)
    layer = (Int8SplitLinear(lin, *on_int8_grid(lin.weight)) if int8
             else Int4Linear(lin, *on_int4_grid(lin.weight)))
    assert layer.blocks is not None
    x = torch.randn(3, 96)
    exact = x @ lin.weight.detach().t()
    try:
        q8kernel.use(True)
        with_kernel = layer(x)
        assert torch.equal(with_kernel, layer._kernel(x, layer.blocks, 64))
        q8kernel.use(False)
        with_torch = layer(x)
        assert torch.equal(with_torch, layer._products(x.to(torch.bfloat16)).float())
    finally:
        q8kernel.use(True)
    assert not torch.equal(with_kernel, with_torch)  # two different roundings of the activations
    for y in (with_kernel, with_torch):
        assert float((y - exact).abs().max() / exact.abs().max()) < 2e-2


def test_concat_keeps_the_parts_blocks_as_views():
    parts = [Int4Linear(lin, *on_int4_grid(lin.weight)) for lin in (grid_linear(32, 64), grid_linear(16, 64))]
    joint = Int4Linear.concat(parts)
    assert joint.blocks.shape == (48, 2 * 20)
    assert parts[1].blocks.data_ptr() == joint.blocks[32:].data_ptr()
    x = torch.randn(2, 64)
    torch.testing.assert_close(joint(x), torch.cat([p(x) for p in parts], dim=-1), rtol=0, atol=0)


def _levels(n: int, k: int, seed: int):
    q, d, m = q4_weights(n, k, seed)
    return (q, d, m), q8kernel.pack_q4_1(q, d, m)


@pytest.mark.parametrize("p", [1, 3])
def test_fused_layer_matches_its_twin_and_rows_stay_independent(p):
    hidden, hq, hk, d, inter = 96, 3, 1, 32, 160
    g = torch.Generator().manual_seed(6)
    x = torch.randn(p, hidden, generator=g)
    w1, w2 = torch.rand(hidden, generator=g) + 0.5, torch.rand(hidden, generator=g) + 0.5
    qkv_l, qkv_b = _levels((hq + 2 * hk) * d, hidden, 7)
    o_l, o_b = _levels(hidden, hq * d, 8)
    gu_l, gu_b = _levels(2 * inter, hidden, 9)
    dn_l, dn_b = _levels(hidden, inter, 10)
    angles = torch.rand(p, d // 2, generator=g) * 3
    cos = torch.cat([angles.cos(), angles.cos()], -1)
    sin_signed = torch.cat([-angles.sin(), angles.sin()], -1)
    q, k, v = q8kernel.layer_pre(x, w1, 1e-5, qkv_b, cos, sin_signed, hq, hk)
    rq, rk, rv = q8kernel.layer_pre_reference(x, w1, 1e-5, qkv_l, cos, sin_signed, hq, hk)
    assert q.shape == (1, hq, p, d) and k.shape == v.shape == (1, hk, p, d)
    for a, b in ((q, rq), (k, rk), (v, rv)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()))
    o = torch.randn(1, hq, p, d, generator=g)
    y = q8kernel.layer_post(x, o, o_b, w2, 1e-5, gu_b, inter, dn_b)
    want = q8kernel.layer_post_reference(x, o, o_l, w2, 1e-5, gu_l, inter, dn_l)
    torch.testing.assert_close(y, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))
    for i in range(p):  # row i alone: the same bits
        qi, ki, vi = q8kernel.layer_pre(x[i:i + 1], w1, 1e-5, qkv_b, cos[i:i + 1], sin_signed[i:i + 1], hq, hk)
        assert torch.equal(qi[0, :, 0], q[0, :, i]) and torch.equal(ki[0, :, 0], k[0, :, i])
        assert torch.equal(vi[0, :, 0], v[0, :, i])
        yi = q8kernel.layer_post(x[i:i + 1], o[:, :, i:i + 1], o_b, w2, 1e-5, gu_b, inter, dn_b)
        assert torch.equal(yi[0], y[i])
