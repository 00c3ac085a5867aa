"""A small Fashion-MNIST CNN, a shipped instrument, as a fast feature extractor.

Inception runs at only a few images per second on a 2-core CPU, so the Fashion-MNIST suite
also reports a Fréchet distance in the 64-d penultimate features of this network
(:mod:`bench.metrics.fd_fmnist`), in the spirit of the domain-specific "FID" variants used for
MNIST-like data. It is a measuring instrument: its weights are a fixed file shipped with the project
(``bench/instruments/fmnist-cnn-v1.safetensors``, sha256 checked on load, recipe and test accuracy
in the card beside it; :mod:`bench.instruments`), never retrained per machine: the same recipe
on another CPU trains different weights. :func:`train_instrument` (``bench instrument train``)
trains a new version under a new id. Values are only comparable between runs that log the same
instrument id and sha256.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from bench.cell_timing import charged
from bench.data.base import ImageSplit
from bench.training import Schedule, Update, epoch_minibatches, fit

EXTRACTOR_ID = "fmnist-cnn"
ARCH_VERSION = "fmnist-cnn-v1: conv32-pool-conv64-pool-fc64-relu | fc10"
FEATURE_DIM = 64
# Training runs on one CPU thread: oneDNN's gradient reductions depend on the thread count
# (2 threads and 1 thread gave different weights), and on a busy 2-core machine one thread was
# also ~10x faster than two (no oversubscription). Part of the cache key.
TRAIN_THREADS = 1
# Fashion-MNIST train-set pixel mean / std (of x / 255), a fixed input normalisation.
_MEAN, _STD = 0.2860, 0.3530


@dataclass(frozen=True)
class Recipe:
    """Training recipe of an instrument version (recorded in its card). Tests use tiny ones.

    ``n_train``: use the first n training images (None = all 60k); ``epochs`` full passes
    in a seeded random order; Adam with ``lr`` and a cosine decay to 0 over all steps.
    """

    seed: int = 0
    epochs: int = 2
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.0
    n_train: int | None = None


DEFAULT_RECIPE = Recipe()
"""The recipe fmnist-cnn-v1 was trained with (``bench instrument train`` uses it by default)."""


class FMNISTNet(nn.Module):
    """uint8 [N, 1, 28, 28] -> logits float32 [N, 10]; :meth:`embed` gives the 64-d features."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 32 x 14 x 14
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 64 x 7 x 7
            nn.Flatten(), nn.Linear(64 * 7 * 7, FEATURE_DIM), nn.ReLU(),
        )
        self.head = nn.Linear(FEATURE_DIM, 10)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [N, 1, 28, 28] in [0, 255] -> float32 [N, 64] penultimate (post-ReLU) features."""
        x = (images.float() / 255.0 - _MEAN) / _STD
        return self.body(x)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(images))


@contextlib.contextmanager
def _deterministic():
    """Deterministic kernels on :data:`TRAIN_THREADS` threads; the caller's settings are restored after."""
    prev = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    prev_threads = torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(TRAIN_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(prev_threads)
        torch.use_deterministic_algorithms(prev, warn_only=prev_warn)


def weights_sha256(model: nn.Module) -> str:
    """sha256 (hex) over parameter names, shapes and raw bytes, in state-dict order."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@dataclass
class FMNISTClassifier:
    """A trained (or cached) :class:`FMNISTNet` with its provenance."""

    model: FMNISTNet
    test_acc: float  # fraction in [0, 1] on the Fashion-MNIST test split
    weights_sha256: str
    train_seconds: float  # wall time of the training run that produced the weights
    recipe: Recipe
    key: str  # the instrument id (empty for a classifier trained in-process)

    @charged("instrument")
    @torch.no_grad()
    def features(self, images: torch.Tensor, batch_size: int = 1000) -> np.ndarray:
        """uint8 [N, 1, 28, 28] in [0, 255] -> float64 [N, 64] penultimate features (CPU)."""
        if images.dtype != torch.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != (1, 28, 28):
            raise ValueError(f"expected uint8 images [N, 1, 28, 28], got {images.dtype} {tuple(images.shape)}")
        self.model.eval()
        parts = [self.model.embed(images[i: i + batch_size]).double() for i in range(0, len(images), batch_size)]
        return torch.cat(parts).numpy()

    instrument: dict | None = None  # the instrument card's record when loaded from the registry

    def provenance(self) -> dict:
        """Params logged beside an fd value: the instrument id and its sha256 identify the extractor."""
        return {
            "extractor": self.key if self.instrument else EXTRACTOR_ID,
            "classifier_arch": ARCH_VERSION,
            "classifier_recipe": json.dumps(asdict(self.recipe), sort_keys=True),
            "classifier_test_acc": round(self.test_acc, 5),
            "classifier_weights_sha256": self.weights_sha256,
            **({"instrument_file_sha256": self.instrument["sha256"]} if self.instrument else {}),
        }


@charged("instrument")
@torch.no_grad()
def accuracy(model: FMNISTNet, split: ImageSplit, batch_size: int = 1000) -> float:
    """Top-1 accuracy (fraction) of ``model`` on ``split``."""
    model.eval()
    correct = 0
    for i in range(0, len(split), batch_size):
        pred = model(split.images[i: i + batch_size]).argmax(1)
        correct += int((pred == split.labels[i: i + batch_size]).sum())
    return correct / len(split)


def train_classifier(train: ImageSplit, test: ImageSplit, recipe: Recipe = DEFAULT_RECIPE,
                     progress: bool = False) -> FMNISTClassifier:
    """Train :class:`FMNISTNet` on CPU from scratch, deterministically (no cache).

    Same data + recipe + torch build + CPU kind -> bit-identical weights: the seed fixes the
    init and the per-epoch permutations (own generator, global RNG state untouched), and the
    thread count is pinned to :data:`TRAIN_THREADS`.
    """
    data = train.head(recipe.n_train)
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]), _deterministic():
        torch.manual_seed(recipe.seed)
        model = FMNISTNet().float()  # an instrument computes in float32 in every suite
        gen = torch.Generator().manual_seed(recipe.seed)
        opt = torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
        steps = recipe.epochs * ((len(data) + recipe.batch_size - 1) // recipe.batch_size)
        update = Update(opt, Schedule("torch_cosine", steps), what="fmnist-cnn training")  # no grad clipping
        model.train()

        def step_fn(step: int, idx: torch.Tensor):
            loss = F.cross_entropy(model(data.images[idx]), data.labels[idx])
            return loss, {}

        fit(step_fn, epoch_minibatches(len(data), recipe.batch_size, recipe.epochs, gen), steps,
            "fmnist-cnn training", update, show_progress=progress)
        seconds = time.perf_counter() - t0
        model.eval().requires_grad_(False)
        acc = accuracy(model, test)  # inside: one thread is also faster for inference on a busy box
    return FMNISTClassifier(model, acc, weights_sha256(model), seconds, recipe, key="")


KIND = "fmnist-classifier"
"""Instrument kind of these classifiers in :mod:`bench.instruments`."""

DEFAULT_INSTRUMENT = "fmnist-cnn-v1"
"""The shipped classifier the fd_fmnist metrics use unless a suite names another id."""

_LOADED: dict[tuple[str, str], FMNISTClassifier] = {}


def load_classifier(instrument_id: str = DEFAULT_INSTRUMENT) -> FMNISTClassifier:
    """The registered, shipped classifier ``instrument_id`` (sha256 verified), loaded once per process.

    Raises :class:`bench.instruments.InstrumentError` for an unknown id or a missing/corrupt file.
    """
    from safetensors.torch import load_file

    from bench import instruments

    path = instruments.path(instrument_id, KIND)  # verifies the file's sha256
    mem_key = (instrument_id, str(path))
    if mem_key in _LOADED:
        return _LOADED[mem_key]
    c = instruments.card(instrument_id, KIND)
    if c.provenance.get("arch") != ARCH_VERSION:
        raise instruments.InstrumentError(f"instrument {instrument_id}: architecture {c.provenance.get('arch')!r} "
                                          f"is not this code's {ARCH_VERSION!r}")
    model = FMNISTNet().float()  # an instrument computes in float32 in every suite
    model.load_state_dict(load_file(str(path)))
    model.eval().requires_grad_(False)
    recipe = Recipe(**c.provenance.get("recipe", {}))
    clf = FMNISTClassifier(model, float(c.provenance["test_acc"]), weights_sha256(model),
                           float(c.provenance.get("train_seconds", 0.0)), recipe, key=instrument_id)
    clf.instrument = c.record()
    _LOADED[mem_key] = clf
    return clf


def train_instrument(instrument_id: str, train: ImageSplit, test: ImageSplit, recipe: Recipe = DEFAULT_RECIPE,
                     folder: Path | None = None, progress: bool = True) -> Path:
    """Train a classifier with ``recipe`` and register it as a *new* instrument ``instrument_id``.

    Writes ``<folder>/<id>.safetensors`` and its card ``<id>.json`` (recipe, architecture, test
    accuracy, data fingerprints, CPU and torch version it was trained with); refuses an id that
    exists. ``train`` / ``test``: the full Fashion-MNIST splits. Returns the card's path.
    """
    import platform

    from safetensors.torch import save_file

    from bench.provenance import numerics

    from bench import instruments

    folder = Path(folder or instruments.INSTRUMENTS_DIR)
    if (folder / f"{instrument_id}.json").exists():
        raise instruments.InstrumentError(f"instrument {instrument_id} exists in {folder}: choose a new id")
    clf = train_classifier(train, test, recipe, progress)
    out = folder / f"{instrument_id}.safetensors"
    save_file({k: v.contiguous() for k, v in clf.model.state_dict().items()}, str(out))
    from bench.context import sha256_file

    card = instruments.Card(
        id=instrument_id, kind=KIND, file=out.name, sha256=sha256_file(out), folder=folder,
        description="Fashion-MNIST CNN whose 64-d penultimate features define rFD/gFD (bench.metrics.fd_fmnist).",
        provenance={"arch": ARCH_VERSION, "recipe": asdict(recipe), "train_threads": TRAIN_THREADS,
                    "test_acc": round(clf.test_acc, 5), "weights_sha256": clf.weights_sha256,
                    "train_seconds": round(clf.train_seconds, 1), "train_data": train.fingerprint(),
                    "test_data": test.fingerprint(), "torch": torch.__version__,
                    "trained_on": f"{platform.machine()} {numerics()['cpu']}".strip(),
                    "created": time.strftime("%Y-%m-%d")})
    return instruments.write_card(card)
