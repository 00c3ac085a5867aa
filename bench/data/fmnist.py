"""Fashion-MNIST (Xiao et al. 2017, arXiv 1708.07747): the embedded default data set.

Read from the gzip'd IDX files of Debian's ``dataset-fashion-mnist`` package
(``/usr/share/datasets/fashion-mnist``) or from ``$BENCH_FMNIST_DIR``.
"""
from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from bench.data.base import DatasetBroken, ImageDataset, ImageSplit
from bench.errors import DatasetMissing
from bench.registry import register_dataset

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


REINSTALL = ("Re-install it with `apt-get install --reinstall dataset-fashion-mnist` (as root), or set "
             "BENCH_FMNIST_DIR to a directory holding good copies of the four gzip'd IDX files.")
_MAGIC = {8: 0x801, 16: 0x803}  # header length -> IDX magic: labels (1 dim) and images (3 dims)


def _broken(path: Path, what: str) -> DatasetBroken:
    return DatasetBroken(f"Fashion-MNIST file {path} is broken: {what}. {REINSTALL}")


def idx_count(path: Path, offset: int) -> int:
    """The item count in an IDX file's header (reads only the first bytes); :class:`DatasetMissing` if broken."""
    try:
        with gzip.open(path, "rb") as f:
            head = f.read(offset)
    except (OSError, EOFError, zlib.error) as e:
        raise _broken(path, f"not a readable gzip file ({e})") from None
    return _check_header(path, head, offset)[0]


def _check_header(path: Path, head: bytes, offset: int) -> tuple[int, ...]:
    if len(head) < offset:
        raise _broken(path, f"{len(head)} bytes after decompression, shorter than the {offset}-byte IDX header")
    magic, *dims = (int.from_bytes(head[i:i + 4], "big") for i in range(0, offset, 4))
    if magic != _MAGIC[offset]:
        raise _broken(path, f"IDX magic number 0x{magic:08x}, expected 0x{_MAGIC[offset]:08x}")
    if offset == 16 and dims[1:] != [28, 28]:
        raise _broken(path, f"images of {dims[1]}x{dims[2]}, expected 28x28")
    return tuple(dims)


def _read_idx(path: Path, offset: int) -> np.ndarray:
    """The payload of a gzip'd IDX file (after its header); :class:`DatasetMissing` naming the file if broken."""
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except EOFError:
        raise _broken(path, "the gzip stream is truncated (incomplete download or copy?)") from None
    except (OSError, zlib.error) as e:
        raise _broken(path, f"not a valid gzip file ({e})") from None
    dims = _check_header(path, data[:offset], offset)
    want = int(np.prod(dims))
    have = len(data) - offset
    if have != want:
        raise _broken(path, f"the header announces {dims[0]} items ({want} bytes) but {have} bytes follow")
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
    if len(labels) != len(images):
        raise _broken(d / lab_f, f"{len(labels)} labels for the {len(images)} images of {d / img_f}")
    if labels.size and labels.max() > 9:
        raise _broken(d / lab_f, f"label {int(labels.max())} outside 0..9")
    import torch  # here, not at the top: reading split sizes (validation) needs no torch

    return ImageSplit(torch.from_numpy(images.copy()), torch.from_numpy(labels.copy()))


@register_dataset("fmnist")
class FashionMNIST:
    """60k train / 10k test, 1x28x28 uint8, 10 balanced classes."""

    resolutions = (28,)

    @staticmethod
    def check_available(spec) -> None:
        """:class:`DatasetMissing` if an IDX file is absent (none is read)."""
        fmnist_dir(spec.root)

    @staticmethod
    def split_sizes(spec) -> dict[str, int]:
        """Images per split, from the IDX headers (no image is read); :class:`DatasetMissing` if absent or broken."""
        d = fmnist_dir(spec.root)
        sizes = {}
        for split, (img_f, lab_f) in FILES.items():
            n_img, n_lab = idx_count(d / img_f, 16), idx_count(d / lab_f, 8)
            if n_img != n_lab:
                raise _broken(d / lab_f, f"{n_lab} labels for the {n_img} images of {d / img_f}")
            sizes[split] = n_img
        return sizes

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
