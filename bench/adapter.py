"""The adapter interface: one class per research method, with declared capabilities.

An adapter wraps a method behind up to four capabilities (a suite that asks a metric of an
adapter lacking the capability the metric needs is rejected at validation time):

* ``tokenize``  -- :meth:`Adapter.encode`, :meth:`Adapter.decode`, :attr:`Adapter.codebook_sizes`
* ``generate``  -- :meth:`Adapter.sample` (NFE = ``steps``)
* ``prior``     -- :meth:`Adapter.prior_nll` (likelihood of token sequences under the AR prior)
* ``finetune``  -- :meth:`Adapter.finetune` (adapt a base model, report cost)

Each adapter declares a pydantic ``Params`` model (like a peft config dataclass): suites
are validated against it, so an unknown or out-of-range parameter is an error naming its field.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from bench.context import CellContext

CAPABILITIES = ("tokenize", "generate", "prior", "finetune")


class AdapterParams(BaseModel):
    """Base for adapter parameter models: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class FinetuneResult:
    """What :meth:`Adapter.finetune` returns: the adapted model and its cost record.

    Units: parameters as counts, sizes in bytes, times in seconds, memory in bytes, FLOPs as counts.
    """

    model: Any
    trainable_params: int
    adapter_layers: list[int]
    adapter_bytes: int
    median_step_s: float
    total_train_s: float
    peak_memory_bytes: int
    train_flops: float
    extra: dict[str, float] = field(default_factory=dict)


class Adapter:
    """Base class of all method adapters.

    Subclasses set ``capabilities`` (a subset of :data:`CAPABILITIES`), ``Params`` and implement
    :meth:`prepare` (train or load whatever the method needs, using ``ctx.cache`` so a rerun
    loads instead of retraining) and the methods of their capabilities.
    """

    capabilities: ClassVar[frozenset[str]] = frozenset()
    Params: ClassVar[type[AdapterParams]] = AdapterParams
    registry_name: ClassVar[str] = "?"

    def __init__(self, params: AdapterParams, seed: int):
        self.params = params
        self.seed = seed

    # -- lifecycle -------------------------------------------------------------------------
    def prepare(self, ctx: "CellContext") -> None:
        """Train (or load from cache) everything the adapter needs for its capabilities."""
        raise NotImplementedError

    def config_for_hash(self) -> dict:
        """The parts of this adapter's configuration that determine its trained weights."""
        return {"adapter": self.registry_name, "params": self.params.model_dump(mode="json")}

    # -- tokenize ----------------------------------------------------------------------------
    @property
    def codebook_sizes(self) -> list[int]:
        """K_t for each token position t of :meth:`encode`'s output (length L)."""
        raise NotImplementedError

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images [B, C, H, W] in [0, 255] -> int64 tokens [B, L], token t in [0, K_t)."""
        raise NotImplementedError

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """int64 tokens [B, L] -> uint8 images [B, C, H, W] in [0, 255]."""
        raise NotImplementedError

    # -- generate ----------------------------------------------------------------------------
    def sample(self, n: int, labels: torch.Tensor | None, steps: int | None, seed: int) -> torch.Tensor:
        """Draw ``n`` images (uint8 [n, C, H, W]); ``labels`` int64 [n] or None; ``steps`` = NFE."""
        raise NotImplementedError

    # -- prior -------------------------------------------------------------------------------
    def prior_nll(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-position negative log-likelihood (float32 [B, L], nats) of the images' tokens."""
        raise NotImplementedError

    # -- finetune ----------------------------------------------------------------------------
    def finetune(self, base_model: Any, task: Any, budget: Any, seed: int) -> FinetuneResult:
        """Adapt ``base_model`` to ``task`` within ``budget``; return the model and its cost."""
        raise NotImplementedError


def check_image_batch(images: torch.Tensor, channels: int, size: int, where: str) -> None:
    """Raise ValueError unless ``images`` is uint8 [B, channels, size, size]."""
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
        got = f"{getattr(images, 'dtype', type(images))} {tuple(getattr(images, 'shape', ()))}"
        raise ValueError(f"{where}: expected uint8 images [B, {channels}, {size}, {size}], got {got}")
    if tuple(images.shape[1:]) != (channels, size, size):
        raise ValueError(
            f"{where}: expected images of shape [B, {channels}, {size}, {size}], got {tuple(images.shape)}"
        )
