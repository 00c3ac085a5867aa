"""Common image data set interface."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bench import registry
from bench.errors import DatasetMissing

if TYPE_CHECKING:  # imported where used: data set metadata (split sizes) is read without torch
    import torch


class DatasetBroken(DatasetMissing):
    """A data set's files are there but unreadable (garbled, truncated, inconsistent); says how to re-install."""


@dataclass
class ImageSplit:
    """One split held in memory: images uint8 [N, C, H, W], labels int64 [N]."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def fingerprint(self) -> str:
        """sha256 (hex, 16 chars) of the raw bytes: keys caches of statistics on this image set."""
        h = hashlib.sha256()
        h.update(str(tuple(self.images.shape)).encode())
        h.update(self.images.contiguous().numpy().tobytes())
        h.update(self.labels.numpy().tobytes())
        return h.hexdigest()[:16]

    def head(self, n: int | None) -> "ImageSplit":
        if n is None or n >= len(self):
            return self
        return ImageSplit(self.images[:n], self.labels[:n])

    def class_balanced(self, n: int) -> "ImageSplit":
        """The first images of each class in turn, ``n`` in all (for balanced references)."""
        import torch

        classes = torch.unique(self.labels)
        per = [torch.nonzero(self.labels == c).flatten() for c in classes]
        idx = []
        i = 0
        while len(idx) < n:
            for p in per:
                if i < len(p) and len(idx) < n:
                    idx.append(int(p[i]))
            i += 1
        t = torch.tensor(sorted(idx))
        return ImageSplit(self.images[t], self.labels[t])


@dataclass
class ImageDataset:
    """A labelled image data set with a train and a test split (both in memory)."""

    name: str
    train: ImageSplit
    test: ImageSplit
    num_classes: int
    channels: int
    resolution: int
    source: str  # where it was read from, for provenance tags

    def describe(self) -> dict:
        return {
            "dataset": self.name,
            "dataset_source": self.source,
            "n_train": len(self.train),
            "n_test": len(self.test),
            "resolution": self.resolution,
            "channels": self.channels,
        }


def check_available(spec) -> None:
    """Raise :class:`bench.errors.DatasetMissing` (naming the path, the variable and the layout) if the
    data set of ``spec`` is not on disk. Reads no data and imports no torch: the loader's optional
    ``check_available(spec)`` looks only at paths, so ``bench run`` says what is missing within seconds."""
    cls = registry.get(registry.DATASETS, "dataset", spec.name)
    check = getattr(cls, "check_available", None)
    if check is not None:
        check(spec)


def load_dataset(spec) -> ImageDataset:
    """Load the data set described by a :class:`bench.suite.DatasetSpec`."""
    cls = registry.get(registry.DATASETS, "dataset", spec.name)
    ds = cls.load(spec)
    ds.train = ds.train.head(spec.n_train)
    ds.test = ds.test.head(spec.n_test)
    return ds
