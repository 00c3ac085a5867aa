"""The built-in rewards (offline, nothing downloaded): judge agreement, JPEG compressibility, component count.

TDM-R1 (arXiv 2603.07700) trains few-step generators on black-box rewards: a detector's binary verdict,
OCR edit distance, JPEG size (``-size_KB`` at quality 95, after DDPO, arXiv 2305.13301). The
Fashion-MNIST counterparts (docs/methods/tdm_r1.md, "small-scale recipe"):

* ``judge``: 1 if the in-domain judge (``fmnist-rjudge-cnn-v1``) gives the requested class
  ``cond.labels`` with probability > ``threshold``, else 0 (binary). ``judge_ood``: the same verdict by
  the out-of-domain judge (``fmnist-rjudge-mlp-v1``: another architecture and seed), the check that
  reward hacking of the first judge would fail.
* ``jpeg``: ``-bytes / 1000`` of the image encoded by Pillow as baseline JPEG at ``quality`` (higher =
  more compressible; continuous, <= 0). ``png``: the same with lossless PNG (zlib level 9), an
  out-of-domain compressibility check.
* ``components``: 1 if the number of 4- (or 8-) connected foreground components (pixels > ``threshold``)
  found by ``scipy.ndimage.label`` equals the target (``cond.extra["target"]``, an int or int64 [B],
  default ``params.target`` = 1: one connected garment), else 0 (binary).

Each is one function plus one :func:`bench.rewards.register_reward` line; torch, Pillow and scipy are
imported inside the functions (registering is light).
"""
from __future__ import annotations

import io
from typing import Any, Literal

from pydantic import Field

from bench.rewards import RewardError, RewardParams, register_reward

IN_DOMAIN_JUDGE, OOD_JUDGE = "fmnist-rjudge-cnn-v1", "fmnist-rjudge-mlp-v1"
JUDGE_KIND = "fmnist-reward-judge"  # = bench.rewards.judges.KIND (not imported: that module loads torch)


def _gray(images) -> Any:
    """uint8 [B, C, H, W] -> uint8 numpy [B, H, W] (channel mean, rounded) for C != 1; the channel itself for C = 1."""
    import numpy as np

    x = images.numpy()
    return x[:, 0] if x.shape[1] == 1 else np.rint(x.mean(1)).astype(np.uint8)


# -- judge agreement -------------------------------------------------------------------------------
class JudgeParams(RewardParams):
    judge: str = Field(IN_DOMAIN_JUDGE, description="registered fmnist-reward-judge instrument id (bench/instruments/)")
    threshold: float = Field(0.8, ge=0.0, lt=1.0, description="the judge's probability of the requested class must "
                                                              "exceed this (0.5 or more implies it is the argmax)")


class OODJudgeParams(JudgeParams):
    judge: str = Field(OOD_JUDGE, description="registered fmnist-reward-judge instrument id (bench/instruments/)")


def judge_agreement(images, cond, params: JudgeParams):
    """1 where the judge's probability of the requested class exceeds the threshold, else 0: uint8 [B, 1, 28, 28] -> float64 [B]."""
    from bench.rewards.judges import load_judge

    if cond.labels is None:
        raise RewardError("reward judge: needs the requested classes (cond.labels int64 [B]); got none")
    probs = load_judge(params.judge).probs(images)  # float64 [B, 10]
    p = probs.gather(1, cond.labels.long().view(-1, 1)).view(-1)
    return (p > params.threshold).double()


def _judge_provenance(params: JudgeParams) -> dict[str, Any]:
    from bench import instruments

    try:
        c = instruments.card(params.judge, JUDGE_KIND)
    except instruments.InstrumentError as e:
        return {"instrument": params.judge, "instrument_error": str(e)}
    return {"instrument": c.id, "instrument_sha256": c.sha256, "judge_arch": c.provenance.get("arch"),
            "judge_test_acc": c.provenance.get("test_acc"), "judge_seed": c.provenance.get("recipe", {}).get("seed")}


register_reward("judge", judge_agreement, range=(0, 1), binary=True, Params=JudgeParams, ood=("judge_ood",),
                provenance=_judge_provenance)
register_reward("judge_ood", judge_agreement, range=(0, 1), binary=True, Params=OODJudgeParams, ood=("judge",),
                provenance=_judge_provenance,
                description="the out-of-domain judge's agreement with the requested class (binary)")


# -- compressibility -------------------------------------------------------------------------------
class JPEGParams(RewardParams):
    quality: int = Field(95, ge=1, le=95, description="Pillow JPEG quality (TDM-R1's JPEG reward: 95)")
    optimize: bool = Field(False, description="Pillow's optimised Huffman tables (False: the standard tables)")


def encoded_bytes(images, fmt: Literal["JPEG", "PNG"], **save_args) -> Any:
    """Encoded size in bytes of each image (Pillow, grey for C = 1, RGB for C = 3): uint8 [B, C, H, W] -> int64 numpy [B]."""
    import numpy as np
    from PIL import Image

    x = images.numpy()
    if x.shape[1] not in (1, 3):
        raise ValueError(f"{fmt} reward: images must have 1 or 3 channels, got {x.shape[1]}")
    sizes = []
    for img in x:
        buf = io.BytesIO()
        pil = Image.fromarray(img[0], "L") if img.shape[0] == 1 else Image.fromarray(img.transpose(1, 2, 0), "RGB")
        pil.save(buf, format=fmt, **save_args)
        sizes.append(buf.tell())
    return np.asarray(sizes, dtype=np.int64)


def jpeg_compressibility(images, cond, params: JPEGParams):
    """-(JPEG size in bytes) / 1000 at a fixed quality: uint8 [B, C, H, W] -> float64 [B] (<= 0, higher = smaller)."""
    return -encoded_bytes(images, "JPEG", quality=params.quality, optimize=params.optimize) / 1000.0


def png_compressibility(images, cond):
    """-(PNG size in bytes) / 1000, zlib level 9: uint8 [B, C, H, W] -> float64 [B] (<= 0, higher = smaller)."""
    return -encoded_bytes(images, "PNG", compress_level=9) / 1000.0


register_reward("jpeg", jpeg_compressibility, range=(float("-inf"), 0.0), Params=JPEGParams, ood=("png", "judge_ood"),
                provenance={"encoder": "Pillow JPEG (baseline)", "unit": "-kB (1 kB = 1000 bytes)"})
register_reward("png", png_compressibility, range=(float("-inf"), 0.0), ood=("jpeg", "judge_ood"),
                provenance={"encoder": "Pillow PNG, compress_level 9", "unit": "-kB (1 kB = 1000 bytes)"})


# -- connected components --------------------------------------------------------------------------
class ComponentParams(RewardParams):
    threshold: int = Field(127, ge=0, le=254, description="a pixel is foreground when its (grey) value exceeds this")
    connectivity: Literal[4, 8] = Field(4, description="4: edge neighbours (scipy.ndimage.label's default), "
                                                       "8: edge and corner neighbours")
    target: int = Field(1, ge=0, description="the count to hit where cond.extra has no 'target'")


def component_counts(images, threshold: int = 127, connectivity: int = 4) -> Any:
    """Connected foreground components per image (``scipy.ndimage.label``): uint8 [B, C, H, W] -> int64 numpy [B]."""
    import numpy as np
    from scipy import ndimage

    structure = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    return np.asarray([ndimage.label(g > threshold, structure=structure)[1] for g in _gray(images)], dtype=np.int64)


def component_target(images, cond, params: ComponentParams):
    """1 where the component count equals the target, else 0: uint8 [B, C, H, W] -> float64 [B]."""
    import numpy as np

    target = cond.extra.get("target", params.target)
    target = np.asarray(target.cpu().numpy() if hasattr(target, "cpu") else target, dtype=np.int64).reshape(-1)
    if target.size not in (1, len(images)):
        raise RewardError(f"reward components: cond.extra['target'] must be an int or int64 [{len(images)}], "
                          f"got {target.size} values")
    return (component_counts(images, params.threshold, params.connectivity) == target).astype(np.float64)


register_reward("components", component_target, range=(0, 1), binary=True, Params=ComponentParams, ood=("judge_ood",),
                provenance={"labeller": "scipy.ndimage.label"})
