"""Tiny synthetic image data and tokenizer configs shared by adapter tests (no data files needed)."""
from __future__ import annotations

import torch

from bench.adapter import Adapter
from bench.data.base import ImageDataset, ImageSplit

TINY = {"codebook_size": 16, "tokenizer": {"length": 4, "width": 32, "depth": 1, "heads": 2},
        "prior": {"width": 32, "layers": 1, "heads": 2}}
BUDGET = {"tokenizer_steps": 24, "tokenizer_batch": 32, "prior_steps": 8, "prior_batch": 32}


def tiny_dataset(n_train: int = 192, n_test: int = 64) -> ImageDataset:
    """Per-class blobs + noise, 4 classes, 28x28 (no data files needed)."""
    g = torch.Generator().manual_seed(123)
    labels = torch.arange(n_train + n_test) % 4
    base = torch.zeros(4, 1, 28, 28)
    for c in range(4):
        base[c, :, 4 * c:4 * c + 10, 3:25] = 200
    imgs = (base[labels] + 40 * torch.rand(n_train + n_test, 1, 28, 28, generator=g)).clamp(0, 255).to(torch.uint8)
    return ImageDataset("tiny", ImageSplit(imgs[:n_train], labels[:n_train]), ImageSplit(imgs[n_train:], labels[n_train:]),
                        4, 1, 28, "synthetic")


class IdentityTokenizer(Adapter):
    """Lossless 'tokenizer': pixels are the tokens (so rFID/rFD must be ~0)."""

    capabilities = frozenset({"tokenize"})
    registry_name = "test-identity"

    def encode(self, images):
        return images.flatten(1).long()

    def decode(self, tokens):
        return tokens.view(-1, 1, 28, 28).to(torch.uint8)
