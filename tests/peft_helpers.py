"""Shared fixtures of the PEFT tests: a random-init tiny Qwen3 and a small local BPE tokenizer."""
from __future__ import annotations

import functools

import torch

from adapters.peft.base_models import LoadedBase

TEXT = " ".join(["the cat sat on the mat and the dog ate the bread", "yes no yes no maybe",
                 "Words: rain snow cat dog Topic: animal weather", "Pair: cat dog Same kind: yes"] * 50)


@functools.lru_cache(maxsize=None)
def tokenizer():
    from adapters.peft.qwen3_tiny import train_tokenizer

    return train_tokenizer(TEXT, 300)


def tiny_base(layers: int = 3, hidden: int = 32, heads: int = 4, kv_heads: int = 2, head_dim: int = 8,
              intermediate: int = 48, seed: int = 0) -> LoadedBase:
    """A random-init Qwen3ForCausalLM (float32, eager attention, frozen) wrapped as LoadedBase."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    tok = tokenizer()
    torch.manual_seed(seed)
    cfg = Qwen3Config(vocab_size=len(tok), hidden_size=hidden, intermediate_size=intermediate,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                      head_dim=head_dim, max_position_embeddings=128, tie_word_embeddings=True,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id, bos_token_id=None)
    cfg._attn_implementation = "eager"
    model = Qwen3ForCausalLM(cfg).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return LoadedBase(model=model, tokenizer=tok, name="test-tiny", key=f"test-{layers}-{hidden}-{seed}",
                      device=torch.device("cpu"), dtype=torch.float32)


class FakeTask:
    """What finetune needs of a task: ``train.pairs``."""

    def __init__(self, pairs):
        self.train = type("S", (), {"pairs": pairs})()
        self.validation = type("S", (), {"pairs": pairs[:8]})()
        self.fingerprint = "fake"
        self.tasks = ["fake"]


PAIRS = [(f"Pair: {a} {b}\nSame kind:", " yes" if s else " no")
         for a, b, s in [("cat", "dog", 1), ("cat", "rain", 0), ("snow", "rain", 1), ("bread", "dog", 0)] * 8]
