"""Int4 decode weights (``codedec.quant``) and the ``precision`` setting of ``load_model``.

- only weights already on a 4-bit grid of 32-weight blocks are moved, with the same levels;
- decode rows (<= INT4_MAX_ROWS) go through the int4 kernel, each row's result independent of the
  others (what keeps a verified draft tree token-identical to sequential decoding), prefill rows
  through the kept fp32 weight, bit for bit;
- Q8_0 weights (w = d * q) become two int4 products with the same levels;
- on the embedded model (Q4_1 layers, a Q8_0 embedding): every decoder linear layer is int4, the
  tied lm_head int8-as-two-int4, the next-token choice agrees with fp32, and speculative output
  equals greedy under q4.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from codedec.loading import ModelLoadError, _apply_precision, load_model
from codedec.quant import (
    GROUP,
    INT4_MAX_ROWS,
    Int4Linear,
    Int8SplitLinear,
    on_int4_grid,
    on_int8_grid,
    quantize_int4,
)


def grid_weight(n: int, k: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A weight [n, k] as a Q4_1 GGUF stores it (w = m + d * q per 32-block, the block's min at q=0
    and max at q=15) and its levels q."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(0, 16, (n, k // GROUP, GROUP), generator=g)
    q[..., 0], q[..., 1] = 0, 15
    d = torch.rand(n, k // GROUP, 1, generator=g) * 0.01 + 0.001
    m = -torch.rand(n, k // GROUP, 1, generator=g) * 0.05
    return (m + d * q).reshape(n, k).float(), q.reshape(n, k)


def q8_weight(n: int, k: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A weight [n, k] as a Q8_0 GGUF stores it (w = d * q per 32-block, the block's max |w| at
    |q| = 127) and its levels q."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(-127, 128, (n, k // GROUP, GROUP), generator=g)
    q[..., 0] = 127
    d = torch.rand(n, k // GROUP, 1, generator=g) * 0.001 + 1e-4
    return (d * q).reshape(n, k).float(), q.reshape(n, k)


def test_only_weights_on_a_4bit_grid_are_taken_with_their_levels():
    w, q = grid_weight(48, 96)
    got = on_int4_grid(w)
    assert got is not None and torch.equal(got[0], q.to(torch.int32))
    assert on_int4_grid(w + 1e-3 * torch.randn_like(w)) is None  # an ordinary fp32 weight
    assert on_int4_grid(grid_weight(16, 96)[0][:, :80]) is None  # K not a multiple of 32
    assert on_int4_grid(grid_weight(24, 96)[0]) is None  # N not a multiple of 16 (the kernel's tiles)
    w8, q8 = q8_weight(32, 64)
    assert on_int4_grid(w8) is None and torch.equal(on_int8_grid(w8)[0], q8.to(torch.int32))
    assert on_int8_grid(w8 + 1e-4 * torch.randn_like(w8)) is None


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("bias", [False, True])
def test_int4_linear_decode_rows_and_prefill_rows(bias, bits):
    torch.manual_seed(0)
    w, _ = (grid_weight if bits == 4 else q8_weight)(160, 128, seed=1)
    lin = nn.Linear(128, 160, bias=bias)
    with torch.no_grad():
        lin.weight.copy_(w)
    layer = (Int4Linear(lin, *on_int4_grid(lin.weight)) if bits == 4
             else Int8SplitLinear(lin, *on_int8_grid(lin.weight)))
    x = torch.randn(1, INT4_MAX_ROWS, 128)
    want = lin(x)
    got = layer(x)
    assert got.dtype == torch.float32 and got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-2)  # bf16 activations and scales
    assert not torch.equal(got, want)  # the int4 kernel ran, not the fp32 weight
    rows = torch.cat([layer(x[:, i:i + 1]) for i in range(x.shape[1])], dim=1)
    assert torch.equal(rows, got)  # each row independent of the others: tree rows == sequential rows
    big = torch.randn(2, INT4_MAX_ROWS, 128)  # more rows than the int4 path takes: the fp32 weight
    assert torch.equal(layer(big), lin(big))


@pytest.mark.parametrize("bias", [False, True])
def test_int4_concat_is_the_parts_side_by_side(bias):
    """``Int4Linear.concat``: one product computing every part's outputs — equal to the parts'
    own (each output column is its own dot product), the parts rebound to views of the joint
    levels and still equal to themselves; too many rows for a layer without fp32 weights raise."""
    parts, lins = [], []
    for i, n in enumerate((64, 32, 32)):
        lin = nn.Linear(96, n, bias=bias)
        with torch.no_grad():
            lin.weight.copy_(grid_weight(n, 96, seed=i)[0])
        lins.append(lin)
        parts.append(Int4Linear(lin, *on_int4_grid(lin.weight)))
    x = torch.randn(1, 5, 96)
    before = [p(x) for p in parts]
    joint = Int4Linear.concat(parts)
    assert joint.out_features == 128 and joint.weight is None
    assert torch.equal(joint(x), torch.cat(before, dim=-1))
    assert all(torch.equal(p(x), b) for p, b in zip(parts, before, strict=True))
    assert parts[1].packed.data_ptr() == joint.packed[64:].data_ptr()
    with pytest.raises(ValueError, match="at most"):
        joint(torch.randn(INT4_MAX_ROWS + 1, 96))
    with pytest.raises(ValueError, match="Int4Linear"):
        Int4Linear.concat([parts[0], lins[1]])


def test_quantize_moves_grid_layers_only_and_precision_setting(tiny):
    model = nn.Sequential(nn.Linear(64, 32), nn.Linear(32, 64), nn.Linear(64, 32))
    with torch.no_grad():
        model[0].weight.copy_(grid_weight(32, 64)[0])
        model[2].weight.copy_(q8_weight(32, 64)[0])
    report = quantize_int4(model)
    assert report.int4 == ["0"] and report.int8 == ["2"] and report.kept == ["1"]
    assert isinstance(model[0], Int4Linear) and type(model[1]) is nn.Linear and isinstance(model[2], Int8SplitLinear)
    off_grid = tiny.model  # random weights: nothing on a 4-bit grid
    assert _apply_precision(off_grid, "auto", torch.float32, "cpu", "tiny") == "fp32"
    with pytest.raises(ModelLoadError, match="4-bit grid"):
        _apply_precision(off_grid, "q4", torch.float32, "cpu", "tiny")
    with pytest.raises(ValueError, match="precision must be one of"):
        _apply_precision(off_grid, "int3", torch.float32, "cpu", "tiny")
    assert _apply_precision(model, "fp32", torch.float32, "cpu", "x") == "fp32"


@pytest.fixture(scope="module")
def smollm2_q4(smollm2):  # skips where the embedded model is not installed
    return load_model("smollm2", precision="q4")


def test_embedded_model_q4_agrees_with_fp32(smollm2, smollm2_q4):
    assert smollm2.precision == "fp32" and smollm2_q4.precision == "q4"
    kinds = (nn.Linear, Int4Linear, Int8SplitLinear)
    linears = {n: type(m) for n, m in smollm2_q4.model.named_modules() if isinstance(m, kinds)}
    layers = smollm2_q4.model.config.num_hidden_layers
    assert sum(t is Int4Linear for t in linears.values()) == 7 * layers  # q, k, v, o, gate, up, down: Q4_1
    assert linears["lm_head"] is Int8SplitLinear  # the tied embedding is Q8_0 in the GGUF
    assert sum(t is nn.Linear for t in linears.values()) == 0
    tok = smollm2.tokenizer
    ids = tok.encode("def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + "
                     "fibonacci(n - 2)\n\n\ndef factorial(n):\n    if n == 0:\n        return 1\n", return_tensors="pt")
    agree = []
    with torch.inference_mode():
        for loaded in (smollm2, smollm2_q4):
            from transformers import DynamicCache

            cache = DynamicCache()
            loaded.model(input_ids=ids[:, :8], past_key_values=cache, use_cache=True)
            top = []
            for t in range(8, ids.shape[1]):  # teacher-forced decode steps (1 row: the int4 path)
                out = loaded.model(input_ids=ids[:, t:t + 1], past_key_values=cache, use_cache=True)
                top.append(int(out.logits[0, -1].argmax()))
            agree.append(top)
    same = sum(a == b for a, b in zip(*agree, strict=True)) / len(agree[0])
    assert same >= 0.9, f"q4 picks the fp32 next token at only {same:.0%} of the steps"


def test_speculation_is_greedy_under_q4(smollm2_q4):
    from codedec.engine import Engine
    from codedec.prepare import prepare
    from codedec.strategy import make_strategy

    engine = Engine(smollm2_q4)
    prefix = ("class Stack:\n    def push(self, x):\n        self.items.append(x)\n\n"
              "    def pop(self):\n        return self.items.pop()\n\n\nclass Queue:\n    def push(self, x):\n")
    out = {}
    for name in ("plain", "suffix"):
        p = prepare(engine, prefix, "", max_tokens=40)
        steps = list(engine.generate(p.prompt_ids, p.params, p.chain, make_strategy(name), session=name))
        out[name] = ([t for s in steps for t in s.token_ids], steps[-1].metrics.forwards)
    assert out["suffix"][0] == out["plain"][0] and len(out["plain"][0]) > 10
    assert out["suffix"][1] < out["plain"][1]  # drafts were accepted: the comparison exercised trees
