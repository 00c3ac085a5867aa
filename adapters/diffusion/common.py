"""What every adapter of the discrete-diffusion family shares: params, budget, data binding,
cached training through :func:`bench.training.fit`, the sampler plumbing and the bound's estimator.

Subclasses (:mod:`.mdm`, :mod:`.vadd`, :mod:`.vae`) give only their difference: the networks
(:meth:`build`), the per-image training loss (:meth:`loss`), the per-step logits of the reverse
chain (:meth:`chain_logits`) and the per-image negative bound (:meth:`nelbo`).
"""
from __future__ import annotations

import math
import time
from typing import Any

import torch
from adapters.diffusion import process
from adapters.diffusion.model import NetConfig, n_params
from adapters.diffusion.params import CAPABILITIES, DiffusionBudget, DiffusionParams, data_problems
from bench import HARNESS_VERSION
from bench.adapter import NLL, Adapter, Conditioning, check_image_batch
from bench.context import CellContext, stable_hash
from bench.data.base import ImageDataset
from bench.errors import BenchError
from bench.training import Schedule, Update, fit, minibatches

SAMPLE_BATCH = 500
GRID_TILES = 100


def levels_of(ds: ImageDataset) -> int:
    """V of a data set: ``fmnist_q<V>`` -> V, raw 8-bit pixels (CIFAR-10) -> 256."""
    if ds.name.startswith("fmnist_q"):
        return int(ds.name.removeprefix("fmnist_q"))
    return 256


def tokens_of(images: torch.Tensor, levels: int) -> torch.Tensor:
    """uint8 [B, C, H, W] -> int64 [B, C*H*W] in [0, V): token = p * V // 256."""
    return (images.reshape(len(images), -1).long() * levels // 256).clamp_(0, levels - 1)


def images_of(tokens: torch.Tensor, levels: int, shape: tuple[int, int, int]) -> torch.Tensor:
    """int64 [B, C*H*W] in [0, V) -> uint8 [B, C, H, W] (display value t * 255 // (V - 1))."""
    return (tokens.clamp(0, levels - 1) * 255 // (levels - 1)).to(torch.uint8).reshape(-1, *shape)


class DiffusionAdapter(Adapter):
    """Base of ``mdm``, ``vadd`` and ``vae``: pixels as tokens, x0-prediction, cached training."""

    capabilities = CAPABILITIES
    Params = DiffusionParams
    Budget = DiffusionBudget
    z_dim: int = 0  # subclasses with a latent set it from their params
    anneals_kl: bool = False

    # -- subclass hooks ------------------------------------------------------------------------
    def build(self, cfg: NetConfig) -> dict[str, torch.nn.Module]:
        raise NotImplementedError

    def loss(self, x0: torch.Tensor, y: torch.Tensor | None, kl_weight: float,
             gen: torch.Generator) -> tuple[torch.Tensor, dict]:
        """Per-image training loss [B] (nats) and its parts (scalars)."""
        raise NotImplementedError

    def chain_logits(self, x_t: torch.Tensor, y: torch.Tensor | None, k: int, state: dict,
                     gen: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def nelbo(self, x0: torch.Tensor, y: torch.Tensor | None, gen: torch.Generator) -> torch.Tensor:
        """One-sample negative bound per image [B] (nats) at a t drawn per image."""
        raise NotImplementedError

    def train_key_extra(self) -> dict:
        """Anything beyond the shared recipe that changes the trained weights."""
        return {}

    def train_steps(self, budget: DiffusionBudget) -> int:
        return budget.train_steps

    # -- lifecycle -----------------------------------------------------------------------------
    def net_config(self) -> NetConfig:
        p = self.params
        return NetConfig(n_tokens=self.n_tokens, vocab=self.levels, width=p.width, depth=p.depth,
                         num_classes=self.num_classes if p.class_conditional else 0, z_dim=self.z_dim)

    def bind(self, ds: Any) -> None:
        if not isinstance(ds, ImageDataset):
            raise BenchError(f"adapter {self.registry_name!r} needs an image data set, got {type(ds).__name__}")
        self.levels = levels_of(ds)
        self.shape = (ds.channels, ds.resolution, ds.resolution)
        self.n_tokens = ds.channels * ds.resolution * ds.resolution
        self.num_classes = ds.num_classes
        self.mask_id = self.levels

    def labels(self, y: torch.Tensor | None) -> torch.Tensor | None:
        return y if self.params.class_conditional else None

    def prepare(self, ctx: CellContext) -> None:
        ds = ctx.dataset
        self.bind(ds)
        budget = DiffusionBudget.model_validate(ctx.budget)
        self.nets = self.build(self.net_config())
        self._artifacts = getattr(ctx, "artifact_dir", None)
        self._grids: set[int] = set()
        steps = self.train_steps(budget)
        n_train = budget.train_images or len(ds.train)
        key = stable_hash({"v": HARNESS_VERSION, "kind": "discrete-diffusion", "adapter": self.registry_name,
                           "cfg": self.net_config().__dict__, "schedule": self.params.schedule, "steps": steps,
                           "budget": budget.model_dump(), "data": ds.train.head(n_train).fingerprint(),
                           "seed": self.seed, "extra": self.train_key_extra()})
        ctx.log_param("train_cache_key", key)
        cached = ctx.cache.load_torch("diffusion", key)
        if cached is not None:
            for name, net in self.nets.items():
                net.load_state_dict(cached["state"][name])
            record = cached["record"]
        else:
            record = self.train(ctx, ds, budget, steps, n_train)
            ctx.cache.save_torch("diffusion", key, {"state": {k: v.state_dict() for k, v in self.nets.items()},
                                                    "record": record})
        for net in self.nets.values():
            net.eval().requires_grad_(False)
        self.record = record
        for k, v in record.items():
            if not isinstance(v, list):
                ctx.log_param(k, v)
        ctx.log_param("cached", cached is not None)

    def train(self, ctx: CellContext, ds: ImageDataset, budget: DiffusionBudget, steps: int, n_train: int) -> dict:
        torch.manual_seed(self.seed)
        self.nets = self.build(self.net_config())  # fresh, seeded init
        x_all = tokens_of(ds.train.images[:n_train], self.levels)
        y_all = ds.train.labels[:n_train]
        params = [p for net in self.nets.values() for p in net.parameters()]
        opt = torch.optim.Adam(params, lr=budget.lr)
        update = Update(opt, Schedule("cosine", steps, warmup=max(1, steps // 20), floor=0.1), budget.clip,
                        what=f"{self.registry_name} training")
        gen = torch.Generator().manual_seed(self.seed + 1)
        anneal = max(1, int(budget.kl_anneal_frac * steps))

        def step_fn(step: int, idx: torch.Tensor):
            lam = min(1.0, step / anneal) if (self.anneals_kl and budget.kl_anneal_frac > 0) else 1.0
            per_image, parts = self.loss(x_all[idx], self.labels(y_all[idx]), lam, gen)
            return per_image.mean() / self.n_tokens, {"loss_nats_per_dim": per_image.mean() / self.n_tokens,
                                                      **parts}

        for net in self.nets.values():
            net.train()
        flops = self.step_flops(budget.batch_size)
        t0 = time.perf_counter()
        res = fit(step_fn, minibatches(n_train, budget.batch_size, steps, self.seed), steps,
                  f"{self.registry_name} training", update, log=ctx.log_metric, log_prefix="train/",
                  show_progress=ctx.progress)
        seconds = time.perf_counter() - t0
        self._plot_loss(res.history)
        return {"train_seconds": round(seconds, 2), "train_steps": steps, "train_flops_per_step": flops,
                "train_flops": flops * steps, "n_params": sum(n_params(n) for n in self.nets.values()),
                **{f"n_params_{k}": n_params(v) for k, v in self.nets.items()},
                "final_loss_ema": round(res.ema.get("loss_nats_per_dim", float("nan")), 5)}

    def step_flops(self, batch_size: int) -> int:
        """FLOPs of one training step (forward + backward) at ``batch_size``, counted by torch's FlopCounterMode."""
        from torch.utils.flop_counter import FlopCounterMode

        x0 = torch.zeros(batch_size, self.n_tokens, dtype=torch.long)
        y = torch.zeros(batch_size, dtype=torch.long)
        gen = torch.Generator().manual_seed(0)
        with FlopCounterMode(display=False) as counter:
            per_image, _ = self.loss(x0, self.labels(y), 1.0, gen)
            per_image.mean().backward()
        for net in self.nets.values():
            net.zero_grad(set_to_none=True)
        return int(counter.get_total_flops())

    def _plot_loss(self, history: dict) -> None:
        if self._artifacts is None or "loss_nats_per_dim" not in history:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        (self._artifacts / "plots").mkdir(parents=True, exist_ok=True)
        fig, ax = plt.subplots(figsize=(5, 3.2))
        for k, v in history.items():
            if k in ("loss_nats_per_dim", "kl_nats", "kl_weight"):
                ax.plot(v, label=k, lw=0.8)
        ax.set_xlabel("step"), ax.set_yscale("log"), ax.legend(fontsize=7)
        ax.set_title(f"{self.registry_name} training (seed {self.seed})", fontsize=9)
        fig.tight_layout()
        fig.savefig(self._artifacts / "plots" / f"{self.registry_name}_train_loss.png", dpi=90)
        plt.close(fig)

    # -- generate ------------------------------------------------------------------------------
    def sample(self, n: int, cond: Conditioning, steps: int | None, seed: int) -> torch.Tensor:
        """uint8 [n, C, H, W]; ``steps`` reverse steps (one denoiser call each, NFE = steps)."""
        steps = self.params.default_steps if steps is None else int(steps)
        if steps < 1:
            raise ValueError(f"{self.registry_name}.sample: steps must be >= 1, got {steps}")
        labels = Conditioning.of(cond).labels
        gen = torch.Generator().manual_seed(int(seed) * 1000 + steps)
        out = []
        for i in range(0, n, SAMPLE_BATCH):
            b = min(SAMPLE_BATCH, n - i)
            y = self.labels(labels[i: i + b]) if labels is not None else None
            out.append(self.draw(b, y, steps, gen))
        images = images_of(torch.cat(out), self.levels, self.shape)
        self._grid(images, steps)
        return images

    def draw(self, b: int, y: torch.Tensor | None, steps: int, gen: torch.Generator) -> torch.Tensor:
        """int64 tokens [b, N] by the reverse chain (subclasses without a chain override it)."""
        state: dict = {}
        return process.sample_chain(lambda x, k: self.chain_logits(x, y, k, state, gen), b, self.n_tokens, steps,
                                    self.params.schedule, self.mask_id, gen)

    def _grid(self, images: torch.Tensor, steps: int) -> None:
        if getattr(self, "_artifacts", None) is None or steps in self._grids:
            return
        from torchvision.utils import save_image

        d = self._artifacts / "samples"
        d.mkdir(parents=True, exist_ok=True)
        save_image(images[:GRID_TILES].float() / 255.0, d / f"{self.registry_name}_steps{steps}.png", nrow=10,
                   padding=1, pad_value=0.5)
        self._grids.add(steps)

    # -- prior ---------------------------------------------------------------------------------
    @torch.no_grad()
    def nll(self, images: torch.Tensor, labels: torch.Tensor) -> NLL:
        """Negative continuous-time bound per image (nats, [B]), ``nll_t_samples`` stratified t per image.

        Deterministic (fixed generator). Bits/dim = value / (N ln 2).
        """
        check_image_batch(images, *self.shape[:2], f"{self.registry_name}.nll")
        x0, y = tokens_of(images, self.levels), self.labels(labels)
        gen = torch.Generator().manual_seed(12345)
        total = torch.zeros(len(x0))
        for _ in range(self.params.nll_t_samples):
            for i in range(0, len(x0), SAMPLE_BATCH):
                total[i: i + SAMPLE_BATCH] += self.nelbo(x0[i: i + SAMPLE_BATCH], None if y is None else
                                                         y[i: i + SAMPLE_BATCH], gen)
        return NLL(total / self.params.nll_t_samples)

    @staticmethod
    def bits_per_dim(nats_per_image: torch.Tensor, n_tokens: int) -> torch.Tensor:
        return nats_per_image / (n_tokens * math.log(2))


DiffusionAdapter.data_problems = staticmethod(data_problems)  # read by bench.plan_checks (fail fast)
