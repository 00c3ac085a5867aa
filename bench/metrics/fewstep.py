"""Few-step reward metrics, the shared part: the sampler contract, the fixed noise bank and the controls.

The few-step metrics (:mod:`bench.metrics.reward_nfe`, :mod:`bench.metrics.fewstep_quality`) evaluate
every method on the *same* held-out noises and conditions, so that differences between methods and
NFEs are paired (TDM-R1, arXiv 2603.07700, Sec. 4: rewards at 4 NFE; NCT, arXiv 2506.19741, Sec. 5:
control consistency on independent (noise, control) pairs). A generator taking part implements
:class:`FewStepSampler` beside :class:`bench.adapter.Sampler`.

* :func:`noise_bank`: seeded, class-balanced, drawn from its own seed stream (a sha256 of
  ``"genbench-noise-bank"``, the seed and the block: never ``torch.manual_seed(seed)``, the stream
  training draws from), and prefix-stable (row i depends only on (seed, i)), so one bank serves
  every n, method and NFE.
* Controls (:data:`CONTROLS`): ``lowres7`` (the 7x7 average-pooled image, NCT's super-resolution
  condition, default), ``edges`` (binarised Sobel magnitude, ``scipy.ndimage.sobel``) and ``class``;
  each has an extractor ``h(x)`` (what NCT trains with, c = h(f(z))) and a per-image error between
  ``h(x)`` and the requested control. :func:`bank_controls` pairs bank row i with the control of a
  *real test image* of the same class (independent of z_i).
* :func:`sample_bank`: one adapter's images of the bank at ``steps`` (the inputs ``bank`` /
  ``bank_base`` of :mod:`bench.inputs` call it; the measured NFE comes back with the images).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Protocol, runtime_checkable

from bench.errors import MetricError

if TYPE_CHECKING:
    import torch

    from bench.adapter import Conditioning
    from bench.data.base import ImageSplit

BANK_SEED = 1414
"""Seed of the one noise bank all few-step metrics share (pairing needs one bank, so it is no metric param)."""
INDEP_BANK_SEED = BANK_SEED + 1
"""Seed of the independent bank: other noises, the same labels (the base's samples for controls and the
distributional FD vs the base)."""
BANK_BLOCK = 64  # rows per seeded block (prefix stability)
CONTROL_KINDS = ("lowres7", "edges", "class")


@dataclass(frozen=True)
class Control:
    """A control handed to :meth:`FewStepSampler.sample_from_noise`.

    ``kind``: one of :data:`CONTROL_KINDS`; ``value``: ``lowres7`` float32 [n, C, 7, 7] in [0, 1]
    (``edges``: float32 [n, 1, H, W] in {0, 1}; ``class``: int64 [n] class ids).
    """

    kind: str
    value: "torch.Tensor"


@runtime_checkable
class FewStepSampler(Protocol):
    """A generator that maps given noises to images at a given number of steps (the few-step contract).

    Optional members the metrics read where present: ``noise_shape`` (tuple, the shape of one z;
    default the data set's (C, H, W)); ``controls`` (frozenset of the :data:`CONTROL_KINDS` it
    accepts; default none: it is uncontrolled and is handed ``control=None``); ``drift_reference()
    -> (FewStepSampler, steps) | None`` (the generator it was derived from, e.g. TDM-R1 -> its TDM
    student at 4 steps, and the steps at which that generator's images are its reference: the
    drift-FD and NCT's FD-vs-base compare against those images of the same bank).
    """

    def sample_from_noise(self, z: "torch.Tensor", cond: "Conditioning", steps: int,
                          control: Control | None = None) -> "torch.Tensor":
        """float32 noises z [n, *noise_shape] (standard normal) -> uint8 images [n, C, H, W] in [0, 255].

        Deterministic given (weights, z, cond, steps, control): no fresh randomness (a stochastic
        sampler derives what it needs from z). ``cond``: :class:`bench.adapter.Conditioning`
        (``labels`` int64 [n]). ``steps`` >= 1 network evaluations per image (a value it cannot honour
        is a ValueError naming the accepted ones); classifier-free guidance counts 2 per step. Every
        evaluation is reported with :func:`bench.adapter.count_nfe` (one forward over b images: b).
        ``control``: a :class:`Control` of a kind in ``controls``, or None. Called under ``torch.no_grad``.
        """
        ...


def noise_bank(n: int, shape: tuple[int, ...], num_classes: int, seed: int = BANK_SEED) -> tuple[Any, Any]:
    """The fixed noise bank: (z float32 [n, *shape] ~ N(0, I), labels int64 [n] = i % num_classes).

    Row i depends only on (seed, i) (blocks of :data:`BANK_BLOCK` rows, each from a generator seeded
    by a sha256 of ("genbench-noise-bank", seed, block)): ``noise_bank(m)`` is a prefix of
    ``noise_bank(n)`` for m < n, every prefix is class balanced (counts differ by <= 1), and the stream
    is disjoint from training's ``torch.manual_seed(seed)`` draws. ValueError for n < 1 or num_classes < 1.
    """
    import torch

    from bench.context import stable_hash

    if n < 1 or num_classes < 1:
        raise ValueError(f"noise_bank: need n >= 1 and num_classes >= 1, got n={n}, num_classes={num_classes}")
    blocks = []
    for b in range((n + BANK_BLOCK - 1) // BANK_BLOCK):
        g = torch.Generator().manual_seed(int(stable_hash(["genbench-noise-bank", int(seed), b]), 16) % (1 << 63))
        blocks.append(torch.randn((BANK_BLOCK, *shape), generator=g, dtype=torch.float32))
    return torch.cat(blocks)[:n].contiguous(), torch.arange(n, dtype=torch.int64) % num_classes


# -- controls --------------------------------------------------------------------------------------
def lowres7(images: "torch.Tensor") -> "torch.Tensor":
    """uint8 [n, C, H, W] -> float32 [n, C, 7, 7] in [0, 1]: adaptive average pooling (4x4 blocks at 28x28)."""
    import torch.nn.functional as F

    return F.adaptive_avg_pool2d(images.float() / 255.0, 7)


EDGE_THRESHOLD = 1.0  # Sobel magnitude (grey pixels in [0, 1]) above which a pixel is an edge (~26 % of test pixels)


def edges(images: "torch.Tensor") -> "torch.Tensor":
    """uint8 [n, C, H, W] -> float32 [n, 1, H, W] in {0, 1}: Sobel gradient magnitude of the grey image > EDGE_THRESHOLD."""
    import numpy as np
    import torch
    from scipy import ndimage

    g = images.double().mean(1).numpy() / 255.0  # [n, H, W]; per image (sobel smooths along every other axis)
    mag = np.stack([np.hypot(ndimage.sobel(x, axis=0), ndimage.sobel(x, axis=1)) for x in g]).reshape(g.shape)
    return torch.from_numpy((mag > EDGE_THRESHOLD).astype(np.float32))[:, None]


def judged_class(images: "torch.Tensor") -> "torch.Tensor":
    """uint8 [n, 1, 28, 28] -> int64 [n]: the out-of-domain reward judge's argmax (the ``class`` control's h(x))."""
    from bench.rewards.builtin import OOD_JUDGE
    from bench.rewards.judges import load_judge

    return load_judge(OOD_JUDGE).probs(images).argmax(1)


def _mse(a: "torch.Tensor", b: "torch.Tensor") -> "torch.Tensor":
    return (a.double() - b.double()).pow(2).flatten(1).mean(1)


@dataclass(frozen=True)
class ControlKind:
    """A control: ``extract(uint8 images) -> value`` (NCT's condition model h) and ``error(value of the
    images, requested value) -> float64 [n]`` (lower is better), with its unit for column titles."""

    extract: Callable[[Any], Any]
    error: Callable[[Any, Any], Any]
    unit: str


CONTROLS: dict[str, ControlKind] = {
    "lowres7": ControlKind(lowres7, _mse, "MSE of the 7x7 means, pixels in [0, 1]"),
    "edges": ControlKind(edges, _mse, "fraction of edge pixels that differ"),
    "class": ControlKind(judged_class, lambda a, b: (a != b).double(), "fraction judged another class"),
}


def extract_control(kind: str, images: "torch.Tensor") -> Control:
    """The control ``kind`` of uint8 images [n, C, H, W] (NCT's c = h(x)); ValueError for an unknown kind."""
    if kind not in CONTROLS:
        raise ValueError(f"unknown control {kind!r}; known: {', '.join(CONTROLS)}")
    return Control(kind, CONTROLS[kind].extract(images))


def control_error(control: Control, images: "torch.Tensor") -> "torch.Tensor":
    """Per-image error between ``h(images)`` and the requested ``control``: float64 [n] (>= 0, lower better)."""
    return CONTROLS[control.kind].error(CONTROLS[control.kind].extract(images), control.value)


def bank_controls(kind: str, test: "ImageSplit", labels: "torch.Tensor") -> Control:
    """Controls for bank rows with ``labels`` int64 [n]: row i gets h(x) of the k-th test image of class
    labels[i], k = how many earlier rows asked that class (cycling when a class runs out): real,
    class-consistent controls independent of the noises. MetricError if a class has no test image."""
    import torch

    per: dict[int, torch.Tensor] = {}
    idx = []
    seen: dict[int, int] = {}
    for c in labels.tolist():
        if c not in per:
            per[c] = torch.nonzero(test.labels == c).flatten()
            if len(per[c]) == 0:
                raise MetricError(f"bank controls: the test split has no image of class {c}")
        k = seen.get(c, 0)
        seen[c] = k + 1
        idx.append(int(per[c][k % len(per[c])]))
    if kind == "class":
        return Control(kind, labels.clone())
    return extract_control(kind, test.images[torch.tensor(idx, dtype=torch.long)])


# -- drawing the bank ------------------------------------------------------------------------------
def _check_sampler(adapter: Any) -> None:
    if not callable(getattr(adapter, "sample_from_noise", None)):
        raise MetricError(f"adapter {getattr(adapter, 'registry_name', adapter)!r} has no sample_from_noise: the few-step "
                          "metrics need the bench.metrics.fewstep.FewStepSampler contract")


def sample_bank(ctx: Any, sampler: Any, n: int, steps: int, control: str | None = None,
                bank_seed: int = BANK_SEED, controls: Control | None = None) -> tuple["ImageSplit", float]:
    """``sampler``'s images of the first n rows of the bank ``bank_seed`` at ``steps``: (ImageSplit uint8
    [n, C, H, W] with the bank labels, measured NFE per image). ``control``: a control kind; handed to the
    sampler only if it lists the kind in ``controls`` (else it runs uncontrolled): the given ``controls``
    (n rows), else bank controls of the test split."""
    import torch

    from bench.adapter import Conditioning, NFEMeter, check_image_batch
    from bench.data.base import ImageSplit

    _check_sampler(sampler)
    ds = ctx.dataset
    shape = tuple(getattr(sampler, "noise_shape", None) or (ds.channels, ds.resolution, ds.resolution))
    z, labels = noise_bank(n, shape, ds.num_classes, bank_seed)
    ctl = None
    if control is not None and control in (getattr(sampler, "controls", None) or ()):
        ctl = bank_controls(control, ds.test, labels) if controls is None else controls
        if len(ctl.value) != n:
            raise MetricError(f"sample_bank: {len(ctl.value)} controls for {n} bank rows")
    where = f"{getattr(sampler, 'registry_name', type(sampler).__name__)}.sample_from_noise"
    with torch.no_grad(), NFEMeter() as meter:
        images = sampler.sample_from_noise(z, Conditioning(labels=labels), int(steps), control=ctl)
    check_image_batch(images, ds.channels, ds.resolution, where)
    if len(images) != n:
        raise MetricError(f"{where}: {n} noises gave {len(images)} images")
    return ImageSplit(images.cpu(), labels), meter.per_image(n)


def drift_reference(adapter: Any) -> tuple[Any, int] | None:
    """``adapter.drift_reference()`` checked: (FewStepSampler, steps >= 1) or None (absent or None)."""
    fn = getattr(adapter, "drift_reference", None)
    ref = fn() if callable(fn) else None
    if ref is None:
        return None
    sampler, steps = ref
    _check_sampler(sampler)
    if int(steps) < 1:
        raise MetricError(f"{adapter.registry_name}.drift_reference(): steps must be >= 1, got {steps}")
    return sampler, int(steps)
