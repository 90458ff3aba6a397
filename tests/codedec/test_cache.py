"""KV cache: prefix reuse bookkeeping, crop/rollback/fork leave no trace."""

from __future__ import annotations

import pytest
import torch

from codedec.cache import KVCache, common_prefix_len
from codedec.forward import decode_one, prefill, verify_forward


def test_common_prefix_len():
    assert common_prefix_len([], [1]) == 0
    assert common_prefix_len([1, 2, 3], [1, 2, 4]) == 2
    long = list(range(300))
    assert common_prefix_len(long, long + [1]) == 300
    assert common_prefix_len(long, long[:150] + [-1] + long[151:]) == 150


def test_reuse_always_leaves_one_token_to_encode(tiny):
    cache = KVCache(tiny.model.config)
    prefill(tiny.model, cache, [5, 6, 7, 8])
    assert cache.reuse([5, 6, 7, 8]) == 3 and len(cache) == 3
    assert cache.reuse([5, 6, 9]) == 2
    assert cache.reuse([1]) == 0 and len(cache) == 0


def test_rollback_then_redo_matches_never_having_gone_there(tiny):
    m = tiny.model
    cache = KVCache(m.config)
    prefill(m, cache, [3, 4, 5, 6])
    want = decode_one(m, cache.fork(), 9)
    decode_one(m, cache, 11)
    decode_one(m, cache, 12)
    cache.rollback(2)
    assert len(cache) == 4 and cache.tokens == [3, 4, 5, 6]
    torch.testing.assert_close(decode_one(m, cache, 9), want, rtol=0, atol=1e-6)


def test_fork_is_independent(tiny):
    m = tiny.model
    cache = KVCache(m.config)
    prefill(m, cache, [3, 4, 5])
    snapshot = [(k.clone(), v.clone()) for k, v in cache.layer_tensors()]
    branch = cache.fork()
    verify_forward(m, branch, [7, 8, 9])
    assert len(branch) == 6 and len(cache) == 3
    for (k, v), (k0, v0) in zip(cache.layer_tensors(), snapshot, strict=True):
        assert torch.equal(k, k0) and torch.equal(v, v0)


def test_verify_rows_equal_sequential_decode(tiny):
    m = tiny.model
    cache = KVCache(m.config)
    prefill(m, cache, [3, 4, 5, 6, 7])
    seq = cache.fork()
    rows = verify_forward(m, cache, [10, 11, 12])  # [3, V]
    want = torch.stack([decode_one(m, seq, t) for t in (10, 11, 12)])
    torch.testing.assert_close(rows, want, rtol=1e-5, atol=1e-5)


def test_chunked_prefill_matches_one_shot(tiny):
    ids = list(range(3, 40))
    a, b = KVCache(tiny.model.config), KVCache(tiny.model.config)
    torch.testing.assert_close(prefill(tiny.model, a, ids, chunk=7), prefill(tiny.model, b, ids), rtol=1e-5, atol=1e-5)


def test_bad_crop_is_an_error(tiny):
    cache = KVCache(tiny.model.config)
    with pytest.raises(ValueError):
        cache.crop(1)
    with pytest.raises(ValueError):
        cache.rollback(1)


def test_decode_writes_in_place_and_segments_are_copies(tiny):
    """A decode step writes its position into the layer's buffer (no copy of the cache per token);
    a segment cut out before a crop keeps its values when the cropped positions are written again
    (PIE puts segments back after newly encoded tokens)."""
    m = tiny.model
    cache = KVCache(m.config)
    prefill(m, cache, list(range(3, 40)))
    storage = [k.untyped_storage().data_ptr() for k, _v in cache.layer_tensors()]
    for t in range(5):
        decode_one(m, cache, 50 + t)
    assert [k.untyped_storage().data_ptr() for k, _v in cache.layer_tensors()] == storage
    seg = cache.segment(30, 40)
    before = [k.clone() for k, _v in seg.layers]
    cache.crop(30)
    for t in range(12):  # overwrite positions 30.. with other tokens
        decode_one(m, cache, 90 + t)
    assert all(torch.equal(k, b) for (k, _v), b in zip(seg.layers, before, strict=True))
    cache.crop(30)
    cache.extend(seg)
    assert len(cache) == 40 and cache.tokens[30:] == list(seg.tokens)
    assert all(torch.equal(k[:, :, 30:40], b) for (k, _v), b in zip(cache.layer_tensors(), before, strict=True))
