"""The judge of the discrete-diffusion suites: a Fashion-MNIST CNN trained on *quantised* images.

The grayscale instrument ``fmnist-cnn-v1`` sees binarised images off its training distribution,
so the diffusion suites measure in a classifier of the same architecture
(:class:`bench.metrics.fmnist_classifier.FMNISTNet`) trained on the V-level images of the
``fmnist_quantized`` data set (:mod:`bench.data.fmnist_quantized`). It is a shipped instrument
(kind ``fmnist-judge``, ``bench/instruments/fmnist-bin-judge-v1.*``, card with sha256, recipe,
levels and test accuracy on the quantised test split), trained once by
``bench instrument train fmnist-judge --id ... --levels V``, never at run time. Two uses:

* features: the 64-d penultimate activations (FD in these features, :mod:`bench.metrics.diffusion`);
* judge: its argmax class, for the class agreement of class-conditional samples.
"""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench import instruments
from bench.cell_timing import charged
from bench.data.base import ImageSplit
from bench.errors import MetricError
from bench.metrics import fmnist_classifier as fc

KIND = "fmnist-judge"
DEFAULT_JUDGE = "fmnist-bin-judge-v1"
_LOADED: dict[tuple[str, str], "FMNISTJudge"] = {}


class FMNISTJudge:
    """A shipped judge (a feature extractor of :mod:`bench.instruments.features` too)."""

    def __init__(self, card: instruments.Card):
        self.id, self.card = card.id, card
        self.levels = int(card.provenance["levels"])
        self._model: fc.FMNISTNet | None = None

    @property
    def model(self) -> fc.FMNISTNet:
        if self._model is None:
            from safetensors.torch import load_file

            p = instruments.path(self.id, KIND)  # verifies the sha256
            if self.card.provenance.get("arch") != fc.ARCH_VERSION:
                raise instruments.InstrumentError(f"instrument {self.id}: architecture "
                                                  f"{self.card.provenance.get('arch')!r} is not {fc.ARCH_VERSION!r}")
            m = fc.FMNISTNet()
            m.load_state_dict(load_file(str(p)))
            self._model = m.eval().requires_grad_(False)
        return self._model

    def check(self, ctx: Any) -> None:
        ds = ctx.dataset
        want = f"fmnist_q{self.levels}"
        if getattr(ds, "name", None) != want:
            got = getattr(ds, "name", ds)
            lv = str(got).removeprefix("fmnist_q") if str(got).startswith("fmnist_q") else None
            fix = (f"; name a judge of {lv}-level images in the metric's `judge` param (registered: "
                   f"{judges_of_levels(int(lv))}) or train one: `bench instrument train fmnist-judge --id "
                   f"fmnist-q{lv}-judge-v1 --levels {lv}`" if lv and lv.isdigit() else "")
            raise MetricError(f"instrument {self.id} judges {want} images (data set fmnist_quantized with "
                              f"levels: {self.levels}), got data set {got!r}{fix}")

    def cache_key(self) -> dict[str, Any]:
        return {"instrument": self.id, "sha256": self.card.sha256}

    def provenance(self) -> dict[str, Any]:
        p = self.card.provenance
        return {"extractor": self.id, "instrument_file_sha256": self.card.sha256, "judge_levels": self.levels,
                "judge_test_acc": p.get("test_acc"), "classifier_arch": p.get("arch")}

    @charged("instrument")
    @torch.no_grad()
    def features(self, images: ImageSplit, batch_size: int, ctx: Any = None, real: bool = False) -> np.ndarray:
        """uint8 [N, 1, 28, 28] (an ImageSplit) -> float64 [N, 64] penultimate features."""
        x = images.images
        return torch.cat([self.model.embed(x[i: i + batch_size]).double() for i in range(0, len(x), batch_size)]).numpy()

    @charged("instrument")
    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """uint8 [N, 1, 28, 28] -> int64 [N] judged classes."""
        return torch.cat([self.model(images[i: i + batch_size]).argmax(1) for i in range(0, len(images), batch_size)])


def judges_of_levels(levels: int) -> list[str]:
    """Ids of the registered judges trained on ``levels``-level images."""
    return sorted(i for i, c in instruments.cards().items() if c.kind == KIND and c.provenance.get("levels") == levels)


def judge(instrument_id: str = DEFAULT_JUDGE) -> FMNISTJudge:
    """The registered judge ``instrument_id`` (loaded once per process)."""
    c = instruments.card(instrument_id, KIND)
    key = (instrument_id, c.sha256)
    if key not in _LOADED:
        _LOADED[key] = FMNISTJudge(c)
    return _LOADED[key]


def train_judge(instrument_id: str, train: ImageSplit, test: ImageSplit, levels: int,
                recipe: fc.Recipe = fc.DEFAULT_RECIPE, folder: Path | None = None, progress: bool = True) -> Path:
    """Train :class:`FMNISTNet` on the ``levels``-quantised splits and register it as a new instrument.

    ``train`` / ``test``: the full grayscale Fashion-MNIST splits (quantised here with
    :func:`bench.data.fmnist_quantized.quantize`). Writes ``<id>.safetensors`` and the card
    ``<id>.json`` (recipe, levels, test accuracy on the quantised test split, data fingerprints);
    refuses an existing id. Returns the card's path.
    """
    import platform

    from safetensors.torch import save_file

    from bench.context import sha256_file
    from bench.data.fmnist_quantized import quantize
    from bench.provenance import numerics

    folder = Path(folder or instruments.INSTRUMENTS_DIR)
    if (folder / f"{instrument_id}.json").exists():
        raise instruments.InstrumentError(f"instrument {instrument_id} exists in {folder}: choose a new id")
    qtrain, qtest = quantize(train, levels), quantize(test, levels)
    clf = fc.train_classifier(qtrain, qtest, recipe, progress)
    out = folder / f"{instrument_id}.safetensors"
    save_file({k: v.contiguous() for k, v in clf.model.state_dict().items()}, str(out))
    card = instruments.Card(
        id=instrument_id, kind=KIND, file=out.name, sha256=sha256_file(out), folder=folder,
        description=f"Fashion-MNIST CNN judge trained on {levels}-level images: 64-d features for FD and "
                    "argmax class for class agreement (bench.metrics.diffusion).",
        provenance={"arch": fc.ARCH_VERSION, "levels": levels, "recipe": asdict(recipe),
                    "train_threads": fc.TRAIN_THREADS, "test_acc": round(clf.test_acc, 5),
                    "test_acc_on": f"fmnist test split quantised to {levels} levels",
                    "weights_sha256": clf.weights_sha256, "train_seconds": round(clf.train_seconds, 1),
                    "train_data": qtrain.fingerprint(), "test_data": qtest.fingerprint(), "torch": torch.__version__,
                    "trained_on": f"{platform.machine()} {numerics()['cpu']}".strip(),
                    "created": time.strftime("%Y-%m-%d")})
    return instruments.write_card(card)
