"""The reward judges: Fashion-MNIST classifiers that *score* generated images (TDM-R1 rewards).

A reward judge is a registered instrument (kind ``fmnist-reward-judge``, :mod:`bench.instruments`):
weights shipped as ``bench/instruments/<id>.safetensors`` with a card carrying their sha256, the
architecture, the recipe, the seed and the test accuracy; trained once, deterministically
(one thread, seeded), by ``bench instrument train fmnist-reward-judge --id ... --arch ... --seed ...``,
never at run time.

Two architectures, both deliberately *different networks* from the FD feature instrument
``fmnist-cnn-v1`` (3x3 conv32/conv64, fc64): a reward gain bought by fooling the judge must not leak
into the quality metric, and the out-of-domain judge (other architecture, other seed) is evaluated
beside the in-domain one so that reward hacking shows as a gap between the two
(TDM-R1, arXiv 2603.07700, reports out-of-domain rewards beside the trained one for the same reason).

* ``cnn`` (:class:`JudgeCNN`): 5x5 conv16 - pool - 5x5 conv32 - pool - fc96 - fc10 (in-domain judge);
* ``mlp`` (:class:`JudgeMLP`): 784 - 256 - 128 - 10 fully connected (out-of-domain judge).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bench import instruments
from bench.data.base import ImageSplit

KIND = "fmnist-reward-judge"
ARCHS = {"cnn": "fmnist-rjudge-cnn: conv5x5-16-pool-conv5x5-32-pool-fc96-relu | fc10",
         "mlp": "fmnist-rjudge-mlp: fc256-relu-fc128-relu | fc10"}
"""--arch -> the architecture string recorded in the card (loading refuses a card naming another)."""
_MEAN, _STD = 0.2860, 0.3530  # Fashion-MNIST train pixel mean / std of x / 255 (fixed input normalisation)


def _normalise(images: torch.Tensor) -> torch.Tensor:
    return (images.float() / 255.0 - _MEAN) / _STD


class JudgeCNN(nn.Module):
    """uint8 [N, 1, 28, 28] -> logits float32 [N, 10] (the in-domain reward judge)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),  # 16 x 14 x 14
            nn.Conv2d(16, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),  # 32 x 7 x 7
            nn.Flatten(), nn.Linear(32 * 7 * 7, 96), nn.ReLU(), nn.Linear(96, 10))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(_normalise(images))


class JudgeMLP(nn.Module):
    """uint8 [N, 1, 28, 28] -> logits float32 [N, 10] (the out-of-domain reward judge)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
                                 nn.Linear(128, 10))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(_normalise(images))


NETS: dict[str, type[nn.Module]] = {"cnn": JudgeCNN, "mlp": JudgeMLP}


@dataclass(frozen=True)
class JudgeRecipe:
    """How a judge version was trained (recorded in its card): Adam ``lr`` with cosine decay to 0 over
    ``epochs`` seeded passes of the first ``n_train`` train images (None = all 60k), batch ``batch_size``."""

    seed: int = 1
    epochs: int = 1
    batch_size: int = 128
    lr: float = 2e-3
    n_train: int | None = None


class Judge:
    """A loaded judge: :meth:`probs` (softmax over the 10 classes) and its provenance record."""

    def __init__(self, model: nn.Module, card: instruments.Card | None = None):
        self.model = model.eval().requires_grad_(False)
        self.card = card

    @torch.no_grad()
    def probs(self, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """uint8 [N, 1, 28, 28] in [0, 255] -> float64 [N, 10] class probabilities (rows sum to 1)."""
        if images.dtype != torch.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != (1, 28, 28):
            raise ValueError(f"judge: expected uint8 images [N, 1, 28, 28], got {images.dtype} {tuple(images.shape)}")
        parts = [F.softmax(self.model(images[i: i + batch_size]).double(), 1) for i in range(0, len(images), batch_size)]
        return torch.cat(parts) if parts else torch.zeros((0, 10), dtype=torch.float64)

    def provenance(self) -> dict[str, Any]:
        """Instrument id, kind, file sha256, architecture, seed and test accuracy (from the card)."""
        return self.card.record() if self.card is not None else {"id": "(in-process)"}


_LOADED: dict[tuple[str, str], Judge] = {}


def load_judge(instrument_id: str) -> Judge:
    """The shipped judge ``instrument_id`` (sha256 verified before loading), loaded once per process.

    Raises :class:`bench.instruments.InstrumentError` for an unknown id, a missing or corrupt file, or
    a card whose architecture this code does not build.
    """
    from safetensors.torch import load_file

    p = instruments.path(instrument_id, KIND)  # verifies the sha256
    c = instruments.card(instrument_id, KIND)
    key = (instrument_id, c.sha256)
    if key not in _LOADED:
        arch = next((a for a, s in ARCHS.items() if s == c.provenance.get("arch")), None)
        if arch is None:
            raise instruments.InstrumentError(f"instrument {instrument_id}: architecture {c.provenance.get('arch')!r} "
                                              f"is none of this code's {sorted(ARCHS.values())}")
        model = NETS[arch]().float()
        model.load_state_dict(load_file(str(p)))
        _LOADED[key] = Judge(model, c)
    return _LOADED[key]


def train_judge_model(arch: str, train: ImageSplit, recipe: JudgeRecipe) -> tuple[nn.Module, float]:
    """Train a judge of ``arch`` (``cnn`` | ``mlp``) on ``train`` from scratch; return (model, seconds).

    Deterministic: seeded init and batch order (own generator; the global RNG state is restored),
    one CPU thread, deterministic kernels (as the FD instrument is trained,
    :mod:`bench.metrics.fmnist_classifier`). ValueError for an unknown ``arch``.
    """
    from bench.metrics.fmnist_classifier import _deterministic
    from bench.training import Schedule, Update, epoch_minibatches, fit

    if arch not in NETS:
        raise ValueError(f"judge arch {arch!r}: known {sorted(NETS)}")
    data = train.head(recipe.n_train)
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]), _deterministic():
        torch.manual_seed(recipe.seed)
        model = NETS[arch]().float()
        gen = torch.Generator().manual_seed(recipe.seed)
        opt = torch.optim.Adam(model.parameters(), lr=recipe.lr)
        steps = recipe.epochs * ((len(data) + recipe.batch_size - 1) // recipe.batch_size)
        update = Update(opt, Schedule("cosine", steps), what=f"reward judge ({arch}) training")
        model.train()

        def step_fn(step: int, idx: torch.Tensor):
            return F.cross_entropy(model(data.images[idx]), data.labels[idx]), {}

        fit(step_fn, epoch_minibatches(len(data), recipe.batch_size, recipe.epochs, gen), steps,
            f"reward judge ({arch})", update, show_progress=False)
    return model.eval().requires_grad_(False), time.perf_counter() - t0


def accuracy(judge: Judge, split: ImageSplit) -> float:
    """Top-1 accuracy (fraction in [0, 1]) of ``judge`` on ``split``."""
    return float((judge.probs(split.images).argmax(1) == split.labels).double().mean())


def train_instrument(instrument_id: str, arch: str, train: ImageSplit, test: ImageSplit,
                     recipe: JudgeRecipe = JudgeRecipe(), folder: Path | None = None) -> Path:
    """Train a judge and register it as the NEW instrument ``instrument_id`` (refuses an existing id).

    Writes ``<folder>/<id>.safetensors`` and the card ``<id>.json`` (architecture, recipe, test accuracy,
    data fingerprints, torch version, CPU); returns the card's path.
    """
    import platform

    from safetensors.torch import save_file

    from bench.context import sha256_file
    from bench.metrics.fmnist_classifier import TRAIN_THREADS, weights_sha256
    from bench.provenance import numerics

    folder = Path(folder or instruments.INSTRUMENTS_DIR)
    if (folder / f"{instrument_id}.json").exists():
        raise instruments.InstrumentError(f"instrument {instrument_id} exists in {folder}: choose a new id")
    model, seconds = train_judge_model(arch, train, recipe)
    acc = accuracy(Judge(model), test)
    out = folder / f"{instrument_id}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out))
    role = "in-domain" if arch == "cnn" else "out-of-domain"
    card = instruments.Card(
        id=instrument_id, kind=KIND, file=out.name, sha256=sha256_file(out), folder=folder,
        description=f"Fashion-MNIST reward judge ({arch}, {role} by default): class probabilities for the "
                    "judge-agreement rewards (bench.rewards); a different network from fmnist-cnn-v1.",
        provenance={"arch": ARCHS[arch], "recipe": asdict(recipe), "train_threads": TRAIN_THREADS,
                    "test_acc": round(acc, 5), "weights_sha256": weights_sha256(model),
                    "params": sum(p.numel() for p in model.parameters()), "train_seconds": round(seconds, 1),
                    "train_data": train.head(recipe.n_train).fingerprint(), "test_data": test.fingerprint(),
                    "torch": torch.__version__, "trained_on": f"{platform.machine()} {numerics()['cpu']}".strip(),
                    "created": time.strftime("%Y-%m-%d")})
    return instruments.write_card(card)
