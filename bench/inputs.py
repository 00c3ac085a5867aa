"""Declared metric inputs and the one per-cell provider that produces them.

A metric says what it consumes, ``Metric.inputs(params) -> list[InputSpec]``, and asks the cell's
:class:`InputProvider` (:func:`provider`) for each; it never samples, reconstructs or runs a feature
extractor itself. The provider makes each input once per cell (one cell = one adapter and seed):

* ``real_test(n)``: the first n test images; ``real_train_balanced(n)``: n class-balanced train
  images (:meth:`ImageSplit.class_balanced`); ``real_adm(n)``: the first n of the ADM ImageNet-256
  reference batch. Cheap, made at exactly n.
* ``reconstructions(n)``: ``decode(encode(x))`` of the first n test images, labels of x.
* ``samples(n, steps, temperature)``: ``adapter.sample(N, Conditioning(labels = i % num_classes), steps,
  seed=ctx.seed)``, steps None = the adapter's default; temperature None = the adapter's own, else
  drawn with its ``temperature`` param set to it (:func:`bench.sampling.at_temperature`). Every
  prefix is class balanced.
* ``features(instrument, of=<input>)``: an instrument's features (:mod:`bench.instruments.features`)
  of another input, float64 [n, D]; once per (instrument, input, batch size).

Reconstructions and samples are expensive: the provider makes the *largest* n that any metric of
the suite declares (per ``steps`` for samples) and hands out prefixes, so gFID at n=200 and gFD at
n=5000 share one ``sample`` call. Each sample call runs inside an :class:`NFEMeter`: the measured
NFE per image is kept (:meth:`InputProvider.nfe`) and logged as metric ``nfe`` (step = the asked
steps, 0 for the default). A PNG grid of each image set goes to ``ctx.artifact_dir`` once.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from typing import TYPE_CHECKING

import numpy as np
from pydantic import ValidationError

from bench import registry
from bench.adapter import Conditioning, NFEMeter, check_image_batch
from bench.data.base import ImageSplit
from bench.errors import DatasetMissing, MetricError

if TYPE_CHECKING:  # imported where used: metrics declare their inputs (validation) without torch
    import torch

REAL_TEST, REAL_TRAIN_BALANCED, REAL_ADM = "real_test", "real_train_balanced", "real_adm"
RECONSTRUCTIONS, SAMPLES, FEATURES = "reconstructions", "samples", "features"
POOLED = (RECONSTRUCTIONS, SAMPLES)  # made once at the largest n, handed out as prefixes
GRID_TILES = 100  # images in each PNG grid
RECON_BATCH = 256  # encode/decode chunk (tokenizers act per image, so chunking changes nothing)
ADM_REF_NAME = "VIRTUAL_imagenet256_labeled.npz"


@dataclass(frozen=True)
class InputSpec:
    """One declared input. Build with :func:`real_test`, :func:`samples`, :func:`features`, ..."""

    kind: str
    n: int = 0
    steps: int | None = None  # samples only: NFE asked of the sampler (None = its default)
    temperature: float | None = None  # samples only: sampling temperature (None = the adapter's own)
    instrument: str | None = None  # features only
    of: "InputSpec | None" = None  # features only: the image input they are computed on
    batch_size: int | None = None  # features only: the extractor's batch size

    def pool(self) -> tuple[str, int | None] | tuple[str, int | None, float]:
        """Which shared image set this input is a prefix of."""
        return (self.kind, self.steps) if self.temperature is None else (self.kind, self.steps, self.temperature)


def real_test(n: int) -> InputSpec:
    return InputSpec(REAL_TEST, n)


def real_train_balanced(n: int) -> InputSpec:
    return InputSpec(REAL_TRAIN_BALANCED, n)


def real_adm(n: int) -> InputSpec:
    return InputSpec(REAL_ADM, n)


def reconstructions(n: int) -> InputSpec:
    return InputSpec(RECONSTRUCTIONS, n)


def samples(n: int, steps: int | None = None, temperature: float | None = None) -> InputSpec:
    return InputSpec(SAMPLES, n, steps=steps, temperature=None if temperature is None else float(temperature))


def features(instrument: str, of: InputSpec, batch_size: int) -> InputSpec:
    if of.kind == FEATURES:
        raise ValueError("features of features are not an input")
    return InputSpec(FEATURES, of.n, instrument=instrument, of=of, batch_size=batch_size)


def cyclic_labels(n: int, num_classes: int) -> torch.Tensor:
    """int64 [n] = ``i % num_classes``: every prefix is class balanced (counts differ by <= 1)."""
    import torch

    return torch.arange(n, dtype=torch.int64) % num_classes


def declared_inputs(suite: Any) -> list[InputSpec]:
    """Every input declared by the suite's metrics (features unwrapped to their image inputs too)."""
    out: list[InputSpec] = []
    for spec in getattr(suite, "metrics", None) or []:
        cls = registry.meta("metric", spec.name)
        if cls is None:
            continue
        try:
            declared = cls.inputs(cls.Params.model_validate(spec.params))
        except ValidationError:
            continue  # the suite validator reports it; here it must not block other metrics
        for s in declared:
            out += [s, s.of] if s.of is not None else [s]
    return out


def provider(ctx: Any) -> "InputProvider":
    """The cell's provider (made on first use and kept in ``ctx.inputs``)."""
    p = getattr(ctx, "inputs", None)
    if p is None:
        p = InputProvider(ctx)
        ctx.inputs = p
    return p


class InputProvider:
    """Makes each declared input once per cell; see the module docstring."""

    def __init__(self, ctx: Any):
        self.ctx = ctx
        self._pools: dict[tuple[str, int | None], ImageSplit] = {}
        self._features: dict[InputSpec, np.ndarray] = {}
        self._nfe: dict[int | None, float] = {}
        self._grids: set[str] = set()

    # -- sizes ---------------------------------------------------------------------------------
    def pool_size(self, spec: InputSpec) -> int:
        """Largest n any metric of ``ctx.suite`` declares for ``spec``'s pool (at least ``spec.n``)."""
        sizes = [spec.n] + [s.n for s in declared_inputs(getattr(self.ctx, "suite", None)) if s.pool() == spec.pool()]
        return max(sizes)

    def pooled(self, kind: str, steps: int | None = None, temperature: float | None = None) -> ImageSplit | None:
        """The shared image set made so far for (kind, steps[, temperature]), or None."""
        return self._pools.get((kind, steps) if temperature is None else (kind, steps, float(temperature)))

    def nfe(self, steps: int | None = None) -> float:
        """Measured network evaluations per image of the samples made at ``steps``."""
        return self._nfe[steps]

    # -- inputs --------------------------------------------------------------------------------
    def get(self, spec: InputSpec, adapter: Any = None) -> Any:
        """``spec``'s value: an :class:`ImageSplit` (n images), or float64 [n, D] for features."""
        if spec.kind == FEATURES:
            return self._get_features(spec, adapter)
        if spec.kind in POOLED:
            have = self._pools.get(spec.pool())
            if have is None or len(have) < spec.n:
                if spec.kind == RECONSTRUCTIONS:
                    have = self._reconstruct(adapter, self.pool_size(spec), spec.steps)
                else:
                    have = self._sample(adapter, self.pool_size(spec), spec.steps, spec.temperature)
                self._pools[spec.pool()] = have
            return have.head(spec.n)
        return self._real(spec)

    def _real(self, spec: InputSpec) -> ImageSplit:
        ds, n = self.ctx.dataset, spec.n
        if spec.kind == REAL_TEST:
            if len(ds.test) < n:
                raise MetricError(f"metric asks for n={n} test images but the data set's test split has "
                                  f"{len(ds.test)} (raise dataset.n_test or lower the metric's n)")
            return ds.test.head(n)
        if spec.kind == REAL_TRAIN_BALANCED:
            if len(ds.train) < n:
                raise MetricError(f"metric asks for n={n} training images but the train split has "
                                  f"{len(ds.train)} (raise dataset.n_train or lower the metric's n)")
            return ds.train.class_balanced(n)
        if spec.kind == REAL_ADM:
            return adm_reference(self.ctx, n)
        raise MetricError(f"unknown input kind {spec.kind!r}")

    def _sample(self, adapter: Any, total: int, steps: int | None, temperature: float | None = None) -> ImageSplit:
        import torch

        from bench.sampling import at_temperature

        ds = self.ctx.dataset
        labels = cyclic_labels(total, ds.num_classes)
        with torch.no_grad(), at_temperature(adapter, temperature), NFEMeter() as meter:
            images = adapter.sample(total, Conditioning(labels=labels), steps=steps, seed=self.ctx.seed)
        check_image_batch(images, ds.channels, ds.resolution, f"{adapter.registry_name}.sample")
        if len(images) != total:
            raise MetricError(f"{adapter.registry_name}.sample({total}) returned {len(images)} images")
        first = steps not in self._nfe
        self._nfe[steps] = meter.per_image(total)
        if first:  # once per steps (the NFE does not depend on the temperature)
            self.ctx.log_metric("nfe", self._nfe[steps], steps or 0)
        out = ImageSplit(images.cpu(), labels)
        name = "samples" + ("" if steps is None else f"_steps{steps}") + (
            "" if temperature is None else f"_T{temperature:g}".replace(".", "p"))
        self._grid(name + ".png", out.images[:GRID_TILES], ds.num_classes)
        return out

    def _reconstruct(self, adapter: Any, total: int, steps: int | None = None) -> ImageSplit:
        import torch

        ds = self.ctx.dataset
        ref = self._real(real_test(total))
        parts = []
        with torch.no_grad():
            for i in range(0, len(ref), RECON_BATCH):
                # CPU uint8 in, as the data sets hand it out; adapters move it to their device
                parts.append(adapter.decode(adapter.encode(ref.images[i: i + RECON_BATCH])).cpu())
        images = torch.cat(parts)
        check_image_batch(images, ds.channels, ds.resolution, f"{adapter.registry_name}.decode")
        if len(images) != len(ref):
            raise MetricError(f"{adapter.registry_name}: decode(encode(x)) of {len(ref)} images gave {len(images)}")
        k = min(GRID_TILES, len(ref))
        row = min(10, k)
        if row:  # rows alternate: `row` originals, then their reconstructions
            k -= k % row
            tiles = torch.cat([t for r in range(0, k, row) for t in (ref.images[r: r + row], images[r: r + row])])
            self._grid("reconstructions.png", tiles, row)
        return ImageSplit(images, ref.labels)

    def _get_features(self, spec: InputSpec, adapter: Any) -> np.ndarray:
        if spec not in self._features:
            from bench.instruments.features import extractor

            ext = extractor(spec.instrument)
            ext.check(self.ctx)
            images = self.get(spec.of, adapter)
            real = spec.of.kind not in POOLED
            if real:  # fixed real sets: whole, through the extractor's cache
                self._features[spec] = ext.features(images, spec.batch_size, self.ctx, real=True)
            else:  # several ranks (torchrun): each extracts its global batches (bench.distributed)
                from bench.distributed import sharded_features

                bs = spec.batch_size
                self._features[spec] = sharded_features(len(images), bs, lambda s, c: ext.features(
                    images if (s, c) == (0, len(images)) else _rows(images, s, c), bs, self.ctx, real=False))
        return self._features[spec]

    def _grid(self, name: str, images: torch.Tensor, nrow: int) -> Path | None:
        """Write uint8 [k, C, H, W] as one PNG grid into ``ctx.artifact_dir/samples/`` (once per cell and name;
        logged as the run's ``samples/*.png`` artifacts, which the HTML leaderboard embeds)."""
        from torchvision.utils import save_image

        if name in self._grids or len(images) == 0 or getattr(self.ctx, "artifact_dir", None) is None:
            return None
        path = Path(self.ctx.artifact_dir) / "samples" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(images.float() / 255.0, path, nrow=nrow, padding=1, pad_value=1.0)
        self._grids.add(name)
        return path


def _rows(split: ImageSplit, start: int, count: int) -> ImageSplit:
    return ImageSplit(split.images[start: start + count], split.labels[start: start + count])
def adm_path(ctx: Any) -> Path:
    """Where the ADM reference batch is looked for: ``$ADM_REF_BATCH`` or ``<data root>/{ADM_REF_NAME}``."""
    return Path(os.environ.get("ADM_REF_BATCH") or Path(ctx.dataset.source) / ADM_REF_NAME)


def adm_reference(ctx: Any, n: int) -> ImageSplit:
    """The first n images of the ADM reference batch (``$ADM_REF_BATCH`` or ``<data root>/{ADM_REF_NAME}``)."""
    import torch

    path = adm_path(ctx)
    if not path.exists():
        raise DatasetMissing(f"gfid reference 'adm': {path} not found. Set ADM_REF_BATCH to the ADM reference "
                             f"batch {ADM_REF_NAME} (an .npz whose arr_0 is uint8 [N, 256, 256, 3]) or place it "
                             "in the data set's root.")
    arr = np.load(path, allow_pickle=False)["arr_0"][:n]
    images = torch.from_numpy(np.ascontiguousarray(arr.transpose(0, 3, 1, 2)))
    return ImageSplit(images, torch.zeros(len(images), dtype=torch.long))
