"""Light declarations of the discrete-diffusion family (imports no torch): the Params and Budget
models of ``mdm``, ``vadd`` and ``vae``, what they are (:func:`bench.registry.declare_adapter`) and
the family's fail-fast data check (:func:`data_problems`), so `bench validate` checks a diffusion
suite without loading torch. The implementations (:mod:`.common`, :mod:`.mdm`, :mod:`.vadd`,
:mod:`.vae`, :mod:`.process`) import these.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from bench.adapter import AdapterParams
from bench.registry import declare_adapter

ScheduleName = Literal["linear", "loglinear", "cosine"]
"""Noise schedules alpha_t of :mod:`.process`."""


class DiffusionBudget(BaseModel):
    """Training budget (optimiser steps of Adam, batch of images) and the bound's estimator sizes."""

    model_config = ConfigDict(extra="forbid")
    train_steps: int = Field(2000, ge=1, description="optimiser steps")
    batch_size: int = Field(128, gt=0, description="images per step")
    lr: float = Field(3e-4, gt=0, description="Adam learning rate (cosine decay to 10%, 5% warm-up)")
    clip: float | None = Field(1.0, gt=0, description="max gradient L2 norm (None = no clipping)")
    kl_anneal_frac: float = Field(0.3, ge=0, le=1, description="KL weight lambda rises linearly 0 -> 1 over "
                                  "this fraction of the steps (VADD/VAE only)")
    train_images: int | None = Field(None, gt=0, description="train on the first N train images (None = all)")


class DiffusionParams(AdapterParams):
    """Choices the papers leave open at this scale (MDLM arXiv 2406.07524, VADD arXiv 2505.17384)."""

    schedule: ScheduleName = Field("linear", description="noise schedule alpha_t: linear 1-t, "
                                   "loglinear (MDLM's, eps=1e-3) or cosine (MD4)")
    width: int = Field(512, gt=0, description="hidden units of the MLP denoiser")
    depth: int = Field(2, ge=1, description="hidden layers of the MLP denoiser")
    class_conditional: bool = Field(True, description="condition on the class label (added to the first layer)")
    default_steps: int = Field(16, ge=1, description="sampling steps when the harness asks for the default")
    nll_t_samples: int = Field(8, ge=1, description="stratified t samples per image in the test bound")


class MDMParams(DiffusionParams):
    compute_match: Literal["none", "vadd-flops"] = Field(
        "none", description="none: train budget.train_steps; vadd-flops: steps scaled so that training FLOPs equal "
                            "those of a VADD (same width/depth, z_dim=match_z_dim) at budget.train_steps")
    match_z_dim: int = Field(32, gt=0, description="z_dim of the VADD whose FLOPs vadd-flops matches")


class VADDParams(DiffusionParams):
    z_dim: int = Field(32, gt=0, description="d, the Gaussian latent's size")
    sampler: Literal["per_step", "per_trajectory"] = Field(
        "per_step", description="per_step: fresh z ~ N(0, I) at every step (Algorithm 2); per_trajectory: one z "
                                "per image for the whole chain")


def data_problems(ds_spec: Any) -> list[str]:
    """Missing data of a diffusion suite, for ``bench validate`` (file existence only, nothing loaded).

    fmnist / fmnist_quantized: the four IDX files (``BENCH_FMNIST_DIR``); cifar10: the python batches
    under ``CIFAR10_DIR`` (or ``dataset.root``).
    """
    from bench.errors import DatasetMissing

    try:
        if ds_spec.name in ("fmnist", "fmnist_quantized"):
            from bench.data.fmnist import fmnist_dir

            fmnist_dir(ds_spec.root)
        elif ds_spec.name == "cifar10":
            from bench.data.folders import CIFAR10_LAYOUT, _root

            d = _root(ds_spec, "CIFAR10_DIR", CIFAR10_LAYOUT, "CIFAR-10") / "cifar-10-batches-py"
            missing = [n for n in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"] if not (d / n).exists()]
            if missing:
                return [f"CIFAR-10: missing {', '.join(missing)} in {d}; set CIFAR10_DIR to the directory holding "
                        f"cifar-10-batches-py/ (layout: {CIFAR10_LAYOUT})"]
    except DatasetMissing as e:
        return [str(e)]
    return []


CAPABILITIES = frozenset({"generate", "prior"})
for _name, _impl, _params in (("mdm", "adapters.diffusion.mdm:MDMAdapter", MDMParams),
                              ("vadd", "adapters.diffusion.vadd:VADDAdapter", VADDParams),
                              ("vae", "adapters.diffusion.vae:VAEAdapter", VADDParams)):
    declare_adapter(_name, _impl, _params, CAPABILITIES, DiffusionBudget, data_problems=data_problems)
