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
* ``bank(n, steps, control)``: the adapter's images of the first n rows of the fixed noise bank at
  ``steps`` (:func:`bench.metrics.fewstep.sample_bank`; the few-step metrics' paired inputs, labels
  ``i % num_classes``), handed the bank's controls of kind ``control`` if the adapter accepts it;
  ``bank_base(n)``: the same rows drawn by the adapter's drift reference (the generator it was derived
  from, at that generator's reference steps; :func:`bench.metrics.fewstep.drift_reference`).
* ``features(instrument, of=<input>)``: an instrument's features (:mod:`bench.instruments.features`)
  of another input, float64 [n, D]; once per (instrument, input, batch size).

Reconstructions and samples are expensive: the provider makes the *largest* n that any metric of
the suite declares (per ``steps`` for samples) and hands out prefixes, so gFID at n=200 and gFD at
n=5000 share one ``sample`` call. Each sample call runs inside an :class:`NFEMeter`: the measured
NFE per image is kept (:meth:`InputProvider.nfe`) and logged as metric ``nfe`` (step = the asked
steps, 0 for the default). A PNG grid of each image set goes to ``ctx.artifact_dir`` once.

Under ``torchrun`` (a process group with W > 1 ranks, :mod:`bench.torchrun`) the expensive inputs are
sharded, and every rank ends with the same full inputs: samples are drawn in global batches of
:func:`sample_batch` images, batch b = images ``[bB, (b+1)B)`` from ``adapter.sample(count, labels of
those images, steps, seed=batch_seed(ctx.seed, b))``, rank r drawing batches r, r+W, ...; the uint8
images are all-gathered in image order (:func:`bench.distributed.gather_rows`), so the set is exactly n
images, identical for any W (and to one process with ``$BENCH_SAMPLE_BATCH`` set), but not the images
of the one-call path. Reconstructions: rank r decodes its RECON_BATCH chunks (the same chunks as one
process, so the same images). Features of samples and reconstructions: each rank extracts its feature
batches, rows all-gathered (:func:`bench.distributed.sharded_features`). The measured NFE is summed over
the ranks. Real images and their features are made whole on every rank (cached).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
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
BANK, BANK_BASE = "bank", "bank_base"  # noise-bank images of the adapter / of its drift reference
BANK_BASE_INDEP = "bank_base_indep"  # the drift reference's images of the independent bank (other noises)
POOLED = (RECONSTRUCTIONS, SAMPLES, BANK, BANK_BASE, BANK_BASE_INDEP)  # made once at the largest n, handed out as prefixes
GRID_TILES = 100  # images in each PNG grid
RECON_BATCH = 256  # encode/decode chunk (tokenizers act per image, so chunking changes nothing)
SAMPLE_BATCH = 250  # images per global batch of sharded sampling (sample_batch)
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
    control: str | None = None  # bank only: the control kind handed with the bank (None: uncontrolled)
    control_source: str | None = None  # bank with a control: None = real test images, "base" = base samples

    def pool(self) -> tuple:
        """Which shared image set this input is a prefix of."""
        if self.kind == BANK:
            return (self.kind, self.steps, self.control) + (() if self.control_source is None else (self.control_source,))
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


def bank(n: int, steps: int, control: str | None = None, control_source: str | None = None) -> InputSpec:
    """Bank images at ``steps``; with ``control``, paired with controls of real test images
    (``control_source`` None) or of the base's images of the independent bank (``"base"``)."""
    if control_source not in (None, "base"):
        raise ValueError(f"control_source must be None or 'base', got {control_source!r}")
    return InputSpec(BANK, n, steps=int(steps), control=control,
                     control_source=control_source if control is not None else None)


def bank_base_indep(n: int, steps: int) -> InputSpec:
    """The drift reference's images of the independent bank (``bench.metrics.fewstep.INDEP_BANK_SEED``:
    other noises, same labels); an adapter without one: its own images at ``steps``."""
    return InputSpec(BANK_BASE_INDEP, n, steps=int(steps))


def bank_base(n: int) -> InputSpec:
    return InputSpec(BANK_BASE, n)


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
        if spec.kind == BANK and spec.control is not None and spec.control not in (getattr(adapter, "controls", None) or ()):
            spec = replace(spec, control=None, control_source=None)  # no such control: its plain bank
        if spec.kind in POOLED:
            have = self._pools.get(spec.pool())
            if have is None or len(have) < spec.n:
                if spec.kind == RECONSTRUCTIONS:
                    have = self._reconstruct(adapter, self.pool_size(spec), spec.steps)
                elif spec.kind in (BANK, BANK_BASE, BANK_BASE_INDEP):
                    have = self._bank(adapter, self.pool_size(spec), spec)
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

        from bench.distributed import all_sum, batch_seed, gather_rows

        ds = self.ctx.dataset
        labels = cyclic_labels(total, ds.num_classes)
        where = f"{adapter.registry_name}.sample"

        def draw(n: int, cond: torch.Tensor, seed: int) -> torch.Tensor:
            images = adapter.sample(n, Conditioning(labels=cond), steps=steps, seed=seed)
            check_image_batch(images, ds.channels, ds.resolution, where)
            if len(images) != n:
                raise MetricError(f"{where}({n}) returned {len(images)} images")
            return images

        batch = sample_batch()
        with torch.no_grad(), at_temperature(adapter, temperature), NFEMeter() as meter:
            if batch is None:  # one process: one call, as always (the committed baselines)
                images = draw(total, labels, self.ctx.seed)
            else:  # sharded: global batch b from seed batch_seed(seed, b), this rank's batches only
                images = gather_rows(total, batch, lambda b, s, c: draw(c, labels[s: s + c],
                                                                        batch_seed(self.ctx.seed, b)))
        first = steps not in self._nfe
        self._nfe[steps] = all_sum(meter.evaluations) / max(total, 1)  # = meter.per_image(total) in one process
        if first:  # once per steps (the NFE does not depend on the temperature)
            self.ctx.log_metric("nfe", self._nfe[steps], steps or 0)
        out = ImageSplit(images.cpu(), labels)
        name = "samples" + ("" if steps is None else f"_steps{steps}") + (
            "" if temperature is None else f"_T{temperature:g}".replace(".", "p"))
        self._grid(name + ".png", out.images[:GRID_TILES], ds.num_classes)
        return out

    def bank_nfe(self, spec: InputSpec) -> float:
        """Measured network evaluations per image of the bank images of ``spec`` (made by :meth:`get`)."""
        if spec.pool() in self._nfe:
            return self._nfe[spec.pool()]
        return self._nfe[replace(spec, control=None, control_source=None).pool()]

    def _bank(self, adapter: Any, total: int, spec: InputSpec) -> ImageSplit:
        """The noise-bank images of ``spec``'s pool (one process: the bank is not sharded under torchrun)."""
        from bench.metrics.fewstep import INDEP_BANK_SEED, drift_reference, extract_control, sample_bank

        if spec.kind == BANK:
            ctl = None
            if spec.control is not None and spec.control_source == "base":
                ctl = extract_control(spec.control, self.get(bank_base_indep(total, spec.steps), adapter).images)
            out, nfe = sample_bank(self.ctx, adapter, total, spec.steps, spec.control, controls=ctl)
            name = f"bank_steps{spec.steps}" + ("" if spec.control is None else f"_{spec.control}") + (
                "" if spec.control_source is None else f"_{spec.control_source}")
        elif spec.kind == BANK_BASE_INDEP:
            ref = drift_reference(adapter)
            sampler, steps = ref if ref is not None else (adapter, spec.steps)
            out, nfe = sample_bank(self.ctx, sampler, total, steps, bank_seed=INDEP_BANK_SEED)
            name = f"bank_base_indep_steps{steps}"
        else:
            ref = drift_reference(adapter)
            if ref is None:
                raise MetricError(f"{adapter.registry_name}: no drift reference (drift_reference() is absent or None)")
            out, nfe = sample_bank(self.ctx, ref[0], total, ref[1])
            name = f"bank_base_steps{ref[1]}"
        self._nfe[spec.pool()] = nfe
        self._grid(name + ".png", out.images[:GRID_TILES], self.ctx.dataset.num_classes)
        return out

    def _reconstruct(self, adapter: Any, total: int, steps: int | None = None) -> ImageSplit:
        import torch

        ds = self.ctx.dataset
        ref = self._real(real_test(total))
        from bench.distributed import gather_rows

        with torch.no_grad():  # chunks of RECON_BATCH; under torchrun each rank decodes its chunks only
            # CPU uint8 in, as the data sets hand it out; adapters move it to their device
            images = gather_rows(len(ref), RECON_BATCH, lambda b, s, c: adapter.decode(
                adapter.encode(ref.images[s: s + c]))) if len(ref) else torch.zeros(
                    (0, ds.channels, ds.resolution, ds.resolution), dtype=torch.uint8)
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


def sample_batch() -> int | None:
    """Images per global batch of sharded sampling, or None for the one-call path.

    Sharded (batched) sampling is used when a process group with more than one rank is initialised
    (``torchrun``), or in one process when ``$BENCH_SAMPLE_BATCH`` is set (to reproduce a torchrun
    cell's images: they are the same for any number of processes). Batch size: ``$BENCH_SAMPLE_BATCH``,
    default :data:`SAMPLE_BATCH`. The one-call path (``adapter.sample(n, ..., seed)``) draws other
    images than the batched one (each batch has its own seed), which is why it stays the default.
    """
    from bench.distributed import rank_world

    raw = os.environ.get("BENCH_SAMPLE_BATCH")
    if not raw and rank_world()[1] == 1:
        return None
    try:
        value = int(raw) if raw else SAMPLE_BATCH
    except ValueError:
        value = 0
    if value <= 0:
        raise MetricError(f"$BENCH_SAMPLE_BATCH={raw!r}: expected a positive number of images per batch")
    return value


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
