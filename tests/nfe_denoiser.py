"""``test-denoiser``: a tiny iterative sampler whose quality improves with its number of steps.

Each step is one call of a "denoiser" that moves every image a fraction ``rate`` of the way from
its current value to a training image of its class: after s steps the residual of the initial
Gaussian noise is (1 - rate)^s. The denoiser is called through :func:`bench.adapter.counted`, so
the harness measures NFE = s per image (``extra_eval`` adds a wasted evaluation per step: measured,
not declared, so it shows). Adding it to a suite needs this file and a YAML block, nothing else.
"""
from __future__ import annotations

import torch
from pydantic import Field

from bench.adapter import Adapter, AdapterParams, Conditioning, counted
from bench.registry import register_adapter


class DenoiserParams(AdapterParams):
    rate: float = Field(0.5, gt=0, le=1, description="fraction of the way to the target per step")
    noise_std: float = Field(80.0, ge=0, description="std of the initial noise (pixel units)")
    default_steps: int = Field(8, ge=1, description="steps when the harness asks for the default")
    extra_eval: bool = Field(False, description="spend a second (wasted) network call per step")


@register_adapter("test-denoiser")
class IterativeDenoiser(Adapter):
    capabilities = frozenset({"generate"})
    Params = DenoiserParams

    def prepare(self, ctx) -> None:
        self.train = ctx.dataset.train
        self.net = counted(self._denoise)

    def _denoise(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return x + self.params.rate * (target - x)

    def sample(self, n: int, cond: Conditioning, steps: int | None, seed: int) -> torch.Tensor:
        steps = self.params.default_steps if steps is None else steps
        if steps < 1:
            raise ValueError(f"test-denoiser.sample: steps must be >= 1, got {steps}")
        labels = Conditioning.of(cond).labels
        g = torch.Generator().manual_seed(seed)
        if labels is None:
            idx = torch.randint(0, len(self.train), (n,), generator=g)
        else:
            pick = [torch.nonzero(self.train.labels == c).flatten() for c in labels.tolist()]
            idx = torch.stack([p[torch.randint(0, len(p), (1,), generator=g)][0] for p in pick])
        target = self.train.images[idx].float()
        x = 128 + self.params.noise_std * torch.randn(target.shape, generator=g)
        for _ in range(steps):
            x = self.net(x, target)
            if self.params.extra_eval:
                self.net(x, target)
        return x.round().clamp(0, 255).to(torch.uint8)
