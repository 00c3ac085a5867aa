"""What every adapter of the few-step family shares: the data binding, cached stage training
under a per-key lock (teacher -> TDM student -> TDM-R1 / NCT adapter, each stage keyed by its own
fields and its parent's key), and the sampler plumbing: ``sample`` draws seeded noise and calls
``sample_from_noise``, the contract the reward metrics use with a fixed noise bank.

Subclasses give ``load(ctx, budget)`` (build or load their networks, set ``self.net``) and, when
sampling is not plain Euler on ``self.net``, ``generate``.
"""
from __future__ import annotations

import hashlib
from typing import Any, Callable

import torch

from adapters.fewstep import flow
from adapters.fewstep.net import VelocityNet
from adapters.fewstep.params import CAPABILITIES, FewStepBudget, FlowParams, data_problems
from bench import HARNESS_VERSION
from bench.adapter import Adapter, Conditioning
from bench.context import stable_hash
from bench.data.base import ImageDataset
from bench.errors import BenchError
from bench.training import to_uint8

SAMPLE_BATCH = 1000
TRAIN_LOCK_TIMEOUT_S = 6 * 3600.0
CACHE_KIND = "fewstep"


def new_net(p: FlowParams, num_classes: int, seed: int) -> VelocityNet:
    torch.manual_seed(seed)
    return VelocityNet(num_classes, p.width, p.depth, p.parameterisation)


def stage_key(parent: str | None, kind: str, fields: dict) -> str:
    """Cache key of a training stage: harness version, stage kind, its fields, its parent's key."""
    return stable_hash({"v": HARNESS_VERSION, "family": "fewstep", "stage": kind, "parent": parent, **fields})


def cached_stage(ctx: Any, key: str, nets: dict[str, torch.nn.Module], train: Callable[[], dict]) -> dict:
    """Load ``nets``' weights of stage ``key`` from ``ctx.cache`` or run ``train()`` (which trains
    ``nets`` in place and returns a record of floats/ints) and save them; returns the record
    (plus ``cached``: whether it was loaded). Concurrent cells wait on a per-key file lock."""
    from bench.locks import file_lock

    with file_lock(ctx.cache.path(CACHE_KIND, key).with_suffix(".train.lock"), timeout=TRAIN_LOCK_TIMEOUT_S):
        hit = ctx.cache.load_torch(CACHE_KIND, key)
        if hit is not None:
            for name, net in nets.items():
                net.load_state_dict(hit["state"][name])
            return {**hit["record"], "cached": True}
        record = train()
        ctx.cache.save_torch(CACHE_KIND, key, {"state": {k: v.state_dict() for k, v in nets.items()},
                                               "record": record})
    return {**record, "cached": False}


def seed_of(z: torch.Tensor, salt: int = 0) -> int:
    """A seed that is a deterministic function of the bytes of ``z`` (and ``salt``)."""
    h = hashlib.sha256(z.detach().cpu().contiguous().numpy().tobytes() + str(salt).encode()).hexdigest()
    return int(h[:12], 16)


class FewStepAdapter(Adapter):
    """Base of ``teacher``, ``tdm``, ``tdm_r1`` and ``nct``: class-conditional rectified flow on 1x28x28."""

    capabilities = CAPABILITIES
    Params = FlowParams
    Budget = FewStepBudget
    data_problems = staticmethod(data_problems)
    controls: frozenset = frozenset()  # control kinds sample_from_noise accepts (bench.metrics.fewstep)
    net: VelocityNet

    # -- lifecycle -----------------------------------------------------------------------------
    def prepare(self, ctx: Any) -> None:
        ds = ctx.dataset
        if not isinstance(ds, ImageDataset) or (ds.channels, ds.resolution) != (1, 28):
            raise BenchError(f"adapter {self.registry_name!r} needs a 1x28x28 image data set (fmnist), "
                             f"got {getattr(ds, 'name', type(ds).__name__)}")
        self.num_classes = ds.num_classes
        self.records: dict[str, dict] = {}
        self.load(ctx, FewStepBudget.model_validate(ctx.budget))
        for stage, rec in self.records.items():
            for k, v in rec.items():
                if isinstance(v, (int, float, bool, str)):
                    ctx.log_param(f"{stage}_{k}", v)

    def load(self, ctx: Any, budget: FewStepBudget) -> None:
        raise NotImplementedError

    def teacher_key(self, ctx: Any, budget: FewStepBudget) -> str:
        ds, p = ctx.dataset, self.params
        return stage_key(None, "teacher", {
            "width": p.width, "depth": p.depth, "label_dropout": p.label_dropout, "seed": self.seed,
            "parameterisation": p.parameterisation, "x0_loss_weight_cap": p.x0_loss_weight_cap,
            "budget": {k: getattr(budget, k) for k in ("teacher_steps", "teacher_batch", "teacher_lr", "train_images")},
            "data": ds.train.head(budget.train_images).fingerprint()})

    # -- generate ------------------------------------------------------------------------------
    def sample(self, n: int, cond: Conditioning, steps: int | None, seed: int) -> torch.Tensor:
        """uint8 [n, 1, 28, 28]: noise z ~ N(0, I) from a generator seeded by (seed, steps), then
        :meth:`sample_from_noise` (no control)."""
        steps = self.params.default_steps if steps is None else int(steps)
        labels = Conditioning.of(cond).labels
        gen = torch.Generator().manual_seed(int(seed) * 1000 + steps)
        z = torch.randn(n, 1, 28, 28, generator=gen)
        return self.sample_from_noise(z, Conditioning(labels), steps)

    @torch.no_grad()
    def sample_from_noise(self, z: torch.Tensor, cond: Conditioning, steps: int, control: Any = None) -> torch.Tensor:
        """uint8 [n, 1, 28, 28] from noise ``z`` float32 [n, 1, 28, 28], deterministic given (weights,
        z, cond, steps, control): :class:`bench.metrics.fewstep.FewStepSampler`. ``cond.labels``
        int64 [n] or None (the null class). ``steps`` >= 1 network evaluations per image (x2 under
        classifier-free guidance), each reported with :func:`bench.adapter.count_nfe`. ``control``: a
        :class:`bench.metrics.fewstep.Control` of a kind in :attr:`controls` (``nct``: ``lowres7``,
        float32 [n, 1, 7, 7] in [0, 1]), or None. Batches of 1000 noises. ValueError on wrong shapes."""
        if not torch.is_tensor(z) or z.dtype != torch.float32 or tuple(z.shape[1:]) != (1, 28, 28):
            raise ValueError(f"{self.registry_name}.sample_from_noise: z must be float32 [n, 1, 28, 28], "
                             f"got {getattr(z, 'dtype', type(z))} {tuple(getattr(z, 'shape', ()))}")
        steps = int(steps)
        if steps < 1:
            raise ValueError(f"{self.registry_name}: steps must be >= 1, got {steps}")
        labels = Conditioning.of(cond).labels
        y = torch.full((len(z),), self.num_classes, dtype=torch.long) if labels is None else labels.long()
        if len(y) != len(z):
            raise ValueError(f"{self.registry_name}.sample_from_noise: {len(y)} labels for {len(z)} noises")
        c = None
        if control is not None:
            if getattr(control, "kind", None) not in self.controls:
                raise ValueError(f"{self.registry_name}.sample_from_noise: control kind "
                                 f"{getattr(control, 'kind', control)!r} not accepted; accepted: {sorted(self.controls)}")
            c = control.value.float()
            if tuple(c.shape) != (len(z), 1, 7, 7):
                raise ValueError(f"{self.registry_name}: control lowres7 must be [n, 1, 7, 7], got {tuple(c.shape)}")
        out = [to_uint8(self.generate(z[i: i + SAMPLE_BATCH], y[i: i + SAMPLE_BATCH], steps,
                                      None if c is None else c[i: i + SAMPLE_BATCH]))
               for i in range(0, len(z), SAMPLE_BATCH)]
        return torch.cat(out)

    def generate(self, z: torch.Tensor, y: torch.Tensor, steps: int, control: torch.Tensor | None) -> torch.Tensor:
        """float x0 [b, 1, 28, 28] (unclamped) of noises z, labels y [b] (``control``: lowres7 values
        [b, 1, 7, 7] in [0, 1] or None): Euler on ``self.net`` with the Params' guidance."""
        return flow.euler(self.net, z, y, steps, self.params.shift, self.params.cfg_scale)

    def drift_reference(self) -> tuple[Any, int] | None:
        """(the generator this one was derived from, its steps), read by the drift-FD metrics; None here."""
        return None


class FrozenSampler:
    """A :class:`bench.metrics.fewstep.FewStepSampler` over a frozen velocity net (Euler, no control):
    what :meth:`FewStepAdapter.drift_reference` hands out (the base generator of a derived method)."""

    controls: frozenset = frozenset()

    def __init__(self, net: VelocityNet, shift: float, name: str):
        self.net, self.shift, self.registry_name = net, shift, name

    @torch.no_grad()
    def sample_from_noise(self, z: torch.Tensor, cond: Conditioning, steps: int, control: Any = None) -> torch.Tensor:
        """uint8 [n, 1, 28, 28]: Euler on the frozen net (NFE = steps, counted), labels int64 [n]."""
        if control is not None:
            raise ValueError(f"{self.registry_name}: takes no control")
        y = Conditioning.of(cond).labels
        y = torch.full((len(z),), self.net.num_classes, dtype=torch.long) if y is None else y
        return torch.cat([to_uint8(flow.euler(self.net, z[i: i + SAMPLE_BATCH], y[i: i + SAMPLE_BATCH], int(steps),
                                              self.shift)) for i in range(0, len(z), SAMPLE_BATCH)])


def lowres7(x: torch.Tensor) -> torch.Tensor:
    """float images [n, 1, 28, 28] in [-1, 1] -> their 4x4 means mapped to [0, 1], [n, 1, 7, 7]
    (= ``bench.metrics.fewstep.lowres7`` of the uint8 images, up to the uint8 rounding)."""
    return torch.nn.functional.avg_pool2d(x.clamp(-1, 1), 4).add(1).div(2)
