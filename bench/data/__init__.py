"""Data sets. Each loader registers with :func:`bench.registry.register_dataset`.

All image data sets hand out uint8 tensors [N, C, H, W] in [0, 255] and int64 labels [N].
A data set that is not on disk raises :class:`bench.errors.DatasetMissing` naming the path,
the environment variable that sets it, and the expected layout.
"""
from bench.data.base import ImageDataset, load_dataset

__all__ = ["ImageDataset", "load_dataset"]
