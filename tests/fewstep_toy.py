"""``test-fewstep``: a tiny few-step sampler (the :class:`bench.metrics.fewstep.FewStepSampler` contract).

Each step is one counted "network" call that moves every image a fraction ``rate`` of the way from its
current value to a training image of its class, chosen by its noise z (so the images are a
deterministic function of z, and differ within a class). Initial image: ``128 + 80 z``. With
``controlled`` it accepts the ``lowres7`` control and corrects each 4x4 block mean to the control;
with ``base_rate`` its drift reference is the same toy at that rate and ``base_steps``. Tests only.
"""
from __future__ import annotations

import torch
from pydantic import Field

from bench.adapter import Adapter, AdapterParams, Conditioning, count_nfe
from bench.registry import register_adapter


class ToyParams(AdapterParams):
    rate: float = Field(0.5, gt=0, le=1, description="fraction of the way to the target per step")
    default_steps: int = Field(4, ge=1, description="steps when the harness asks for the default")
    controlled: bool = Field(False, description="accept the lowres7 control")
    base_rate: float | None = Field(None, gt=0, le=1, description="drift reference: this toy at that rate")
    base_steps: int = Field(4, ge=1, description="drift reference steps")
    pool: int = Field(20, ge=1, description="train images per class the noise picks from")


@register_adapter("test-fewstep")
class ToyFewStep(Adapter):
    capabilities = frozenset({"generate"})
    Params = ToyParams

    def prepare(self, ctx) -> None:
        train = ctx.dataset.train
        self.targets = torch.stack([train.images[torch.nonzero(train.labels == c).flatten()[: self.params.pool]]
                                    for c in range(ctx.dataset.num_classes)]).float()  # [10, pool, 1, 28, 28]
        self.calls: list[tuple[torch.Tensor, torch.Tensor, int]] = []  # (z, labels, steps) of every call (tests spy)

    @property
    def controls(self) -> frozenset[str]:
        return frozenset({"lowres7"}) if self.params.controlled else frozenset()

    def drift_reference(self):
        if self.params.base_rate is None:
            return None
        base = ToyFewStep(ToyParams(rate=self.params.base_rate, pool=self.params.pool), self.seed)
        base.targets, base.calls = self.targets, []
        return base, self.params.base_steps

    def sample_from_noise(self, z, cond, steps, control=None):
        import torch.nn.functional as F

        labels = Conditioning.of(cond).labels
        self.calls.append((z.clone(), labels.clone(), int(steps)))
        pick = (z.flatten(1)[:, :16] > 0).long() @ (2 ** torch.arange(16))  # [n], a function of z
        target = self.targets[labels, pick % self.targets.shape[1]]
        x = 128 + 80 * z
        for _ in range(steps):
            count_nfe(len(x))
            x = x + self.params.rate * (target - x)
        if control is not None:
            if control.kind not in self.controls:
                raise ValueError(f"test-fewstep: control {control.kind!r} not accepted")
            x = x + (control.value * 255 - F.avg_pool2d(x, 4)).repeat_interleave(4, 2).repeat_interleave(4, 3)
        return x.round().clamp(0, 255).to(torch.uint8)

    def sample(self, n, cond, steps, seed):
        z = torch.randn((n, 1, 28, 28), generator=torch.Generator().manual_seed(seed))
        return self.sample_from_noise(z, cond, self.params.default_steps if steps is None else steps)
