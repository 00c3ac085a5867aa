"""User-provided image data sets read from disk: ImageNet and CIFAR-10.

Neither ships with the harness; their roots come from the suite's ``dataset.root`` or from
``IMAGENET_DIR`` / ``CIFAR10_DIR``. When absent, loading stops at once with a message that
names the path, the variable and the expected layout.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import torch

from bench.data.base import ImageDataset, ImageSplit
from bench.errors import DatasetMissing
from bench.registry import register_dataset

IMAGENET_LAYOUT = (
    "<IMAGENET_DIR>/train/<wnid>/*.JPEG (1000 class folders), <IMAGENET_DIR>/val/<wnid>/*.JPEG, "
    "and for gFID the ADM reference batch <IMAGENET_DIR>/VIRTUAL_imagenet256_labeled.npz"
)
CIFAR10_LAYOUT = (
    "<CIFAR10_DIR>/cifar-10-batches-py/{data_batch_1..5,test_batch} "
    "(the python pickle release, as unpacked from cifar-10-python.tar.gz)"
)


def _root(spec, var: str, layout: str, what: str) -> Path:
    root = spec.root or os.environ.get(var)
    if not root:
        raise DatasetMissing(
            f"{what} is not available: set {var} (or dataset.root in the suite) to its directory. "
            f"Expected layout: {layout}."
        )
    return Path(root)


def _image_folder(path: Path, resolution: int, limit: int | None) -> ImageSplit:
    from torchvision import datasets, transforms

    tf = transforms.Compose([transforms.Resize(resolution), transforms.CenterCrop(resolution), transforms.PILToTensor()])
    ds = datasets.ImageFolder(str(path), transform=tf)
    n = len(ds) if limit is None else min(limit, len(ds))
    # Spread a limited subset over all classes rather than taking the first folders only.
    idx = np.linspace(0, len(ds) - 1, n).astype(int) if limit is not None else range(n)
    imgs, labs = zip(*(ds[i] for i in idx))
    return ImageSplit(torch.stack(imgs), torch.tensor(labs, dtype=torch.int64))


@register_dataset("imagenet")
class ImageNet:
    """ImageNet-1k (ILSVRC 2012), center-cropped to ``resolution`` (256 for the paper suites)."""

    resolutions = None  # any: center-cropped to it
    has_adm_reference = True  # VIRTUAL_imagenet256_labeled.npz (gFID ``reference: adm``)

    @staticmethod
    def split_sizes(spec) -> dict[str, int]:
        return {"train": 1_281_167, "test": 50_000}  # ILSVRC 2012 train / val

    @staticmethod
    def load(spec) -> ImageDataset:
        root = _root(spec, "IMAGENET_DIR", IMAGENET_LAYOUT, "ImageNet")
        for sub in ("train", "val"):
            if not (root / sub).is_dir():
                raise DatasetMissing(
                    f"ImageNet: {root / sub} does not exist (IMAGENET_DIR={root}). Expected layout: {IMAGENET_LAYOUT}."
                )
        res = spec.resolution or 256
        return ImageDataset(
            name="imagenet",
            train=_image_folder(root / "train", res, spec.n_train),
            test=_image_folder(root / "val", res, spec.n_test),
            num_classes=1000,
            channels=3,
            resolution=res,
            source=str(root),
        )


@register_dataset("cifar10")
class CIFAR10:
    """CIFAR-10 (Krizhevsky 2009), 3x32x32, from the python pickle release."""

    resolutions = (32,)

    @staticmethod
    def split_sizes(spec) -> dict[str, int]:
        return {"train": 50_000, "test": 10_000}

    @staticmethod
    def load(spec) -> ImageDataset:
        root = _root(spec, "CIFAR10_DIR", CIFAR10_LAYOUT, "CIFAR-10")
        d = root / "cifar-10-batches-py"
        names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        missing = [n for n in names if not (d / n).exists()]
        if missing:
            raise DatasetMissing(
                f"CIFAR-10: missing {', '.join(missing)} in {d} (CIFAR10_DIR={root}). Expected layout: {CIFAR10_LAYOUT}."
            )

        def read(files):
            xs, ys = [], []
            for n in files:
                with open(d / n, "rb") as f:
                    b = pickle.load(f, encoding="bytes")
                xs.append(np.asarray(b[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
                ys.append(np.asarray(b[b"labels"], dtype=np.int64))
            return ImageSplit(torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys)))

        return ImageDataset(
            name="cifar10", train=read(names[:5]), test=read(names[5:]), num_classes=10, channels=3,
            resolution=32, source=str(root),
        )
