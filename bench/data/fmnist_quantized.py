"""Fashion-MNIST quantised to V grey levels: pixels as tokens for discrete diffusion (``fmnist_quantized``).

Token of a pixel p in [0, 255]: ``p * V // 256`` (V = 2: p > 127, the binarisation of the VADD
probe, docs/methods/vadd.md); the image handed out is the token's display value
``token * 255 // (V - 1)`` (V = 2: {0, 255}), so every consumer (adapters, the judge
instrument, TF-Inception, the real reference sets) sees the same quantised images, and
:func:`tokens_of` / :func:`images_of` are exact inverses on them.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from bench.data.base import ImageDataset, ImageSplit
from bench.data.fmnist import FashionMNIST, fmnist_dir, load_split
from bench.errors import DatasetMissing
from bench.registry import register_dataset

if TYPE_CHECKING:
    import torch


class QuantizedParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    levels: Literal[2, 16] = Field(2, description="V, grey levels per pixel (2 = binarised at p > 127)")


def tokens_of(images: torch.Tensor, levels: int) -> torch.Tensor:
    """uint8 [B, 1, 28, 28] in [0, 255] -> int64 tokens [B, 784] in [0, V)."""
    return (images.reshape(len(images), -1).long() * levels // 256).clamp_(0, levels - 1)


def images_of(tokens: torch.Tensor, levels: int) -> torch.Tensor:
    """int64 tokens [B, 784] in [0, V) -> uint8 images [B, 1, 28, 28] (display value t * 255 // (V-1))."""
    import torch

    return (tokens.clamp(0, levels - 1) * 255 // (levels - 1)).to(torch.uint8).reshape(-1, 1, 28, 28)


def quantize(split: ImageSplit, levels: int) -> ImageSplit:
    """The split with every image replaced by its quantised display image (labels kept)."""
    return ImageSplit(images_of(tokens_of(split.images, levels), levels), split.labels)


@register_dataset("fmnist_quantized")
class FashionMNISTQuantized:
    """Fashion-MNIST (60k / 10k, 1x28x28) quantised to ``levels`` grey values; name ``fmnist_q<V>``."""

    resolutions = (28,)
    Params = QuantizedParams
    split_sizes = staticmethod(FashionMNIST.split_sizes)
    check_available = staticmethod(FashionMNIST.check_available)

    @staticmethod
    def load(spec) -> ImageDataset:
        if spec.resolution not in (None, 28):
            raise DatasetMissing(f"dataset.resolution: Fashion-MNIST is 28x28, got {spec.resolution}")
        levels = QuantizedParams.model_validate(spec.params).levels
        d = fmnist_dir(spec.root)
        return ImageDataset(name=f"fmnist_q{levels}", train=quantize(load_split(d, "train"), levels),
                            test=quantize(load_split(d, "test"), levels), num_classes=10, channels=1,
                            resolution=28, source=str(d))
