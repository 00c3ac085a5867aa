"""User-provided image data sets read from disk: ImageNet and CIFAR-10.

Neither ships with the harness; their roots come from the suite's ``dataset.root`` or from
``IMAGENET_DIR`` / ``CIFAR10_DIR``. When absent, loading stops at once with a message that
names the path, the variable and the expected layout.
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
from pathlib import Path

import numpy as np

from bench.data.base import ImageDataset, ImageSplit
from bench.errors import BenchError, DatasetMissing
from bench.registry import register_dataset

IMAGENET_LAYOUT = (
    "<IMAGENET_DIR>/train/<wnid>/*.JPEG (1000 class folders), <IMAGENET_DIR>/val/<wnid>/*.JPEG, "
    "and for gFID the ADM reference batch <IMAGENET_DIR>/VIRTUAL_imagenet256_labeled.npz"
)
CIFAR10_LAYOUT = (
    "<CIFAR10_DIR>/cifar-10-batches-py/{data_batch_1..5,test_batch} "
    "(the python pickle release, as unpacked from cifar-10-python.tar.gz)"
)


# md5 of each file of the CIFAR-10 python release (cifar-10-python.tar.gz, as published with the data
# set and listed by torchvision.datasets.CIFAR10). Checked before a byte of a batch is unpickled.
CIFAR10_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}


class DatasetCorrupt(BenchError):
    """A data file is not the published one (checksum mismatch) or holds more than plain data."""


def _numpy_globals() -> dict[tuple[str, str], object]:
    """The globals a pickled dict of numpy arrays needs, under numpy 1.x and 2.x module names."""
    import codecs

    try:
        from numpy._core import multiarray, numeric  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray, numeric
    out: dict[tuple[str, str], object] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                                          ("_codecs", "encode"): codecs.encode}  # bytes at protocol 2
    for core in ("numpy.core", "numpy._core"):
        out[(f"{core}.multiarray", "_reconstruct")] = multiarray._reconstruct
        out[(f"{core}.numeric", "_frombuffer")] = numeric._frombuffer  # protocol 5; refuses object dtype
    return out


class _DataUnpickler(pickle.Unpickler):  # verified-load: md5 of the published release first, data-only globals
    """Unpickles plain data only: builtin containers, numbers, strings and numpy arrays.

    Any other global (``os.system``, ``builtins.eval``, a class whose ``__reduce__`` runs code)
    is refused, so a tampered file raises instead of running code.
    """

    _ALLOWED = _numpy_globals()

    def find_class(self, module: str, name: str):
        obj = self._ALLOWED.get((module, name))
        if obj is None:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a data file")
        return obj


def load_data_pickle(data: bytes, what: str) -> object:
    """Unpickle ``data`` (a CIFAR-style batch, ``encoding="bytes"``) with :class:`_DataUnpickler`."""
    try:
        return _DataUnpickler(io.BytesIO(data), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise DatasetCorrupt(f"{what}: not a plain-data pickle ({e})") from None


CIFAR10_CHECKSUMS_ENV = "CIFAR10_CHECKSUMS"


def cifar_checksums() -> tuple[dict[str, str], str]:
    """(file name -> md5, where they come from): :data:`CIFAR10_MD5` (the published release), or the
    ``md5sum``-format file named by ``$CIFAR10_CHECKSUMS`` (a stand-in's own, scripts/make_standins.py)."""
    raw = os.environ.get(CIFAR10_CHECKSUMS_ENV)
    if not raw:
        return CIFAR10_MD5, "the file of the published python release cifar-10-python.tar.gz"
    p = Path(raw).expanduser()
    if not p.is_file():
        raise DatasetMissing(f"{CIFAR10_CHECKSUMS_ENV}={raw}: no such file (expected md5sum lines '<md5>  <name>')")
    out = {}
    for i, line in enumerate(p.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or len(parts[0]) != 32:
            raise DatasetCorrupt(f"{p}:{i}: expected '<md5>  <name>', got {line!r}")
        out[parts[1].lstrip("*")] = parts[0].lower()
    return out, f"the checksum listed in {p} ({CIFAR10_CHECKSUMS_ENV})"


def read_cifar_batch(path: Path) -> dict:
    """One CIFAR-10 batch file: md5 checked against :data:`CIFAR10_MD5` (or ``$CIFAR10_CHECKSUMS``'s
    list, :func:`cifar_checksums`), then unpickled as data only."""
    data = path.read_bytes()
    table, origin = cifar_checksums()
    got, want = hashlib.md5(data, usedforsecurity=False).hexdigest(), table.get(path.name)
    if got != want:
        raise DatasetCorrupt(
            f"CIFAR-10: {path} has md5 {got}, expected {want} ({origin}). "
            f"Re-download and unpack it; the file is not unpickled."
        )
    b = load_data_pickle(data, str(path))
    if not isinstance(b, dict) or b"data" not in b or b"labels" not in b:
        raise DatasetCorrupt(f"CIFAR-10: {path} is not a batch (expected a dict with b'data' and b'labels')")
    return b


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
    import torch  # here, not at the top: reading split sizes (validation) needs no torch

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
    def check_available(spec) -> Path:
        """The root, if its split folders exist (no image is read); :class:`DatasetMissing` otherwise."""
        root = _root(spec, "IMAGENET_DIR", IMAGENET_LAYOUT, "ImageNet")
        for sub in ("train", "val"):
            if not (root / sub).is_dir():
                raise DatasetMissing(
                    f"ImageNet: {root / sub} does not exist (IMAGENET_DIR={root}). Expected layout: {IMAGENET_LAYOUT}."
                )
        return root

    @staticmethod
    def load(spec) -> ImageDataset:
        root = ImageNet.check_available(spec)
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
    def check_available(spec) -> tuple[Path, Path, list[str]]:
        """(root, batch folder, batch names) if every batch file exists (none is read); :class:`DatasetMissing` otherwise."""
        root = _root(spec, "CIFAR10_DIR", CIFAR10_LAYOUT, "CIFAR-10")
        d = root / "cifar-10-batches-py"
        names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        missing = [n for n in names if not (d / n).exists()]
        if missing:
            raise DatasetMissing(
                f"CIFAR-10: missing {', '.join(missing)} in {d} (CIFAR10_DIR={root}). Expected layout: {CIFAR10_LAYOUT}."
            )
        return root, d, names

    @staticmethod
    def load(spec) -> ImageDataset:
        root, d, names = CIFAR10.check_available(spec)

        def read(files):
            xs, ys = [], []
            for n in files:
                b = read_cifar_batch(d / n)
                xs.append(np.asarray(b[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
                ys.append(np.asarray(b[b"labels"], dtype=np.int64))
            import torch  # here, not at the top: reading split sizes (validation) needs no torch

            return ImageSplit(torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys)))

        return ImageDataset(
            name="cifar10", train=read(names[:5]), test=read(names[5:]), num_classes=10, channels=3,
            resolution=32, source=str(root),
        )
