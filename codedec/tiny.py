"""The ``tiny-random`` model: a 2-layer random Llama with a locally trained byte-level tokenizer.

What it is: a real ``LlamaForCausalLM`` and a real fast tokenizer, built in-process in milliseconds
(the tokenizer is trained once per process on a fixed corpus), so tests and quick checks run every
code path of the engine without downloaded weights. Its outputs are meaningless text.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from codedec.loading import LoadedModel, _preset_for, _stop_token_ids

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

_TINY_SPECIALS = ("<|endoftext|>", "<fim_prefix>", "<fim_suffix>", "<fim_middle>")

# A fixed corpus for the tiny tokenizer: changing it changes every tiny-random token id.
_TINY_CORPUS = '''
import os
import sys
from typing import Any


def fibonacci(n: int) -> list[int]:
    """Return the first n Fibonacci numbers."""
    result, a, b = [], 0, 1
    for _ in range(n):
        result.append(a)
        a, b = b, a + b
    return result


class Stack:
    def __init__(self) -> None:
        self.items: list[Any] = []

    def push(self, item: Any) -> None:
        self.items.append(item)

    def pop(self) -> Any:
        if not self.items:
            raise IndexError("pop from an empty stack")
        return self.items.pop()


def count_words(path: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            for word in line.split():
                counts[word] = counts.get(word, 0) + 1
    return counts


def binary_search(items: list[int], target: int) -> int:
    lo, hi = 0, len(items) - 1
    while lo <= hi:
        mid = (lo + hi) // 2
        if items[mid] == target:
            return mid
        elif items[mid] < target:
            lo = mid + 1
        else:
            hi = mid - 1
    return -1


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    for name in args:
        if not os.path.exists(name):
            print(f"no such file: {name}", file=sys.stderr)
            return 2
        total = sum(count_words(name).values())
        print(f"{name}: {total} words", True, False, None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
'''


@functools.lru_cache(maxsize=1)
def _tiny_backend() -> Any:
    """Train the tiny byte-level BPE once per process (deterministic: fixed corpus and settings)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=768,
        min_frequency=1,
        special_tokens=list(_TINY_SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator([_TINY_CORPUS], trainer)
    return backend


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A fresh ``PreTrainedTokenizerFast`` over the tiny byte-level BPE: every byte string encodes,
    ``<|endoftext|>`` is EOS (and PAD), the three ``<fim_*>`` tokens are special; no BOS."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=_tiny_backend(),  # copied by the wrapper
        eos_token=_TINY_SPECIALS[0],
        pad_token=_TINY_SPECIALS[0],
        extra_special_tokens=list(_TINY_SPECIALS[1:]),
        clean_up_tokenization_spaces=False,
        model_max_length=4096,
    )


def build_tiny_random(
    seed: int = 0, *, num_key_value_heads: int = 2, vocab_size: int | None = None
) -> LoadedModel:
    """The ``tiny-random`` preset: a 2-layer random ``LlamaForCausalLM`` (hidden 64, 4 heads) with the
    tiny tokenizer, fp32 on CPU, eval mode. Same ``seed`` -> same weights (the global RNG is left
    untouched). ``vocab_size`` (>= the tokenizer's size) pads the embedding with ids the tokenizer
    never produces; ``num_key_value_heads`` must divide 4 (2: GQA, 4: MHA).
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tiny_tokenizer()
    n_vocab = len(tokenizer) if vocab_size is None else vocab_size
    if n_vocab < len(tokenizer):
        raise ValueError(
            f"vocab_size={vocab_size} is smaller than the tiny tokenizer's {len(tokenizer)} tokens"
        )
    if num_key_value_heads not in (1, 2, 4):
        raise ValueError(f"num_key_value_heads={num_key_value_heads} must divide num_attention_heads=4")
    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=num_key_value_heads,
        vocab_size=n_vocab,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        codedec_preset="tiny-random",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.eval()
    preset = _preset_for(config, tokenizer, "tiny-random", None, Path("."))
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        preset=preset,
        name="tiny-random",
        source=f"built in-process (seed {seed}, {num_key_value_heads} kv heads)",
        stop_token_ids=_stop_token_ids(model, tokenizer, preset),
    )
