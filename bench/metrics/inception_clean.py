"""TF-Inception pool3 features with clean-fid's "clean" resize (Parmar et al. 2022, arXiv 2104.11222).

clean-fid's ``mode="clean"`` resizes each image to 299x299 with PIL bicubic on float32 channels
(``cleanfid.resize.build_resizer("clean")``: no quantisation after the resize, anti-aliased), and
feeds the float [0, 255] result, scaled as ``(x - 128) / 128``, to the TF Inception 2015-12-05
network without its internal resize. Here the resize is clean-fid's own function (offline; no
download) and the network is the verified TorchScript of the FID weights
(:func:`bench.metrics.inception.weights_path`, sha256-checked): the same graph clean-fid wraps.

The resize moves FID by about 1 %: clean-resize values get their own instrument id
(``inception-tf-clean``), so they have their own keys, column titles, config hash and caches, and
are never compared with the TF1-resize ``inception-tf`` columns.
"""
from __future__ import annotations

import warnings
from functools import lru_cache

import numpy as np
import torch
from tqdm.auto import tqdm

from bench.cell_timing import charged
from bench.metrics.inception import FEATURE_DIM, to_rgb_uint8, weights_path

CLEAN_RESIZE_MODE = "clean-fid-pil-bicubic-299"
"""clean-fid's ``build_resizer("clean")``: PIL bicubic per float32 channel to 299x299, not re-quantised."""


def clean_resize(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 1|3, H, W] -> float32 [N, 3, 299, 299] in [0, 255] (clean-fid's resize, per image)."""
    from cleanfid.resize import build_resizer

    resize = build_resizer("clean")
    hwc = to_rgb_uint8(images).permute(0, 2, 3, 1).contiguous().numpy()
    out = np.stack([resize(x) for x in hwc])  # float32 [N, 299, 299, 3]
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


@lru_cache(maxsize=2)
def _network(device: str) -> torch.jit.ScriptModule:
    path = weights_path()  # raises InceptionWeightsMissing unless the sha256 is the published one
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.load is deprecated"
        # verified-load: weights_path() checked the file against the published sha256 WEIGHTS_SHA256
        net = torch.jit.load(str(path), map_location=device)
    return net.eval()


@charged("instrument")
@torch.no_grad()
def clean_features(images: torch.Tensor, batch_size: int = 50, progress: bool = True,
                   device: str | torch.device = "cpu") -> np.ndarray:
    """Pool3 features (float64 [N, 2048]) of uint8 images [N, 1|3, H, W] with the clean resize."""
    net = _network(str(torch.device(device)))
    out = np.empty((len(images), FEATURE_DIM), dtype=np.float64)
    with tqdm(total=len(images), unit="img", desc="Inception features (clean)", disable=not progress,
              leave=False) as bar:
        for i in range(0, len(images), batch_size):
            x = clean_resize(images[i: i + batch_size]).to(device)
            feat = net((x - 128) / 128)
            out[i: i + len(x)] = feat.reshape(len(x), FEATURE_DIM).double().cpu().numpy()
            bar.update(len(x))
    return out
