"""Fashion-MNIST (Xiao et al. 2017, arXiv 1708.07747): the embedded default data set.

Read from the gzip'd IDX files of Debian's ``dataset-fashion-mnist`` package
(``/usr/share/datasets/fashion-mnist``) or from ``$BENCH_FMNIST_DIR``.
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch

from bench.data.base import ImageDataset, ImageSplit
from bench.errors import DatasetMissing
from bench.registry import register_dataset

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def _read_idx(path: Path, offset: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    return np.frombuffer(data, dtype=np.uint8, offset=offset)


def fmnist_dir(root: str | None = None) -> Path:
    """The directory holding the IDX files; raise :class:`DatasetMissing` if any file is absent."""
    d = Path(root or os.environ.get("BENCH_FMNIST_DIR") or DEFAULT_DIR)
    missing = [n for pair in FILES.values() for n in pair if not (d / n).exists()]
    if missing:
        raise DatasetMissing(
            f"Fashion-MNIST not found in {d} (missing {', '.join(missing)}). "
            "Install it with `apt-get install dataset-fashion-mnist` (as root; `make install` does this), "
            "or set BENCH_FMNIST_DIR to a directory holding the four gzip'd IDX files "
            f"{', '.join(n for pair in FILES.values() for n in pair)}."
        )
    return d


def load_split(d: Path, split: str) -> ImageSplit:
    img_f, lab_f = FILES[split]
    images = _read_idx(d / img_f, 16).reshape(-1, 1, 28, 28)
    labels = _read_idx(d / lab_f, 8).astype(np.int64)
    return ImageSplit(torch.from_numpy(images.copy()), torch.from_numpy(labels.copy()))


@register_dataset("fmnist")
class FashionMNIST:
    """60k train / 10k test, 1x28x28 uint8, 10 balanced classes."""

    @staticmethod
    def load(spec) -> ImageDataset:
        if spec.resolution not in (None, 28):
            raise DatasetMissing(f"dataset.resolution: Fashion-MNIST is 28x28, got {spec.resolution}")
        d = fmnist_dir(spec.root)
        return ImageDataset(
            name="fmnist",
            train=load_split(d, "train"),
            test=load_split(d, "test"),
            num_classes=10,
            channels=1,
            resolution=28,
            source=str(d),
        )
