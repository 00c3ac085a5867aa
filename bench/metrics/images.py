"""Shared image sets for the sample-quality metrics (FID/KID, FD in classifier features).

Generating or reconstructing thousands of images is the expensive part of a cell, so every
metric that compares images takes them from here: :func:`generated` samples once the
largest ``n`` that any metric with ``image_pool = "generated"`` in the suite asks for and
hands out prefixes; :func:`reconstructed` does the same for reconstructions of the first
test images (metrics with ``image_pool = "reconstructed"``). Both memoise in ``ctx.memo``
(one cell = one adapter and seed) and write a PNG grid to ``ctx.artifact_dir`` once.

A metric joins a pool by setting the class attribute ``image_pool`` and having a param ``n``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from bench import registry
from bench.adapter import check_image_batch
from bench.data.base import ImageSplit
from bench.errors import MetricError

GENERATED = "generated"
RECONSTRUCTED = "reconstructed"
GRID_TILES = 100  # images in each PNG grid
RECON_BATCH = 256  # encode/decode chunk (tokenizers act per image, so chunking changes nothing)


def memo(ctx: Any) -> dict:
    """The cell's memo dict (created on first use as ``ctx.memo``)."""
    m = getattr(ctx, "memo", None)
    if m is None:
        m = {}
        setattr(ctx, "memo", m)
    return m


def pool_size(ctx: Any, pool: str, n: int) -> int:
    """Largest ``n`` asked of ``pool`` by any metric of ``ctx.suite`` (at least ``n``)."""
    sizes = [int(n)]
    for spec in getattr(getattr(ctx, "suite", None), "metrics", None) or []:
        cls = registry.METRICS.get(spec.name)
        if cls is None or getattr(cls, "image_pool", None) != pool:
            continue
        try:
            sizes.append(int(getattr(cls.Params.model_validate(spec.params), "n", 0) or 0))
        except ValidationError:
            continue  # the suite validator reports it; here it must not block other metrics
    return max(sizes)


def cyclic_labels(n: int, num_classes: int) -> torch.Tensor:
    """int64 [n] = ``i % num_classes``: every prefix is class balanced (counts differ by <= 1)."""
    return torch.arange(n, dtype=torch.int64) % num_classes


def generated(adapter: Any, ctx: Any, n: int) -> ImageSplit:
    """``n`` class-balanced samples: images uint8 [n, C, H, W] in [0, 255], labels int64 [n].

    Calls ``adapter.sample(N, cyclic_labels(N), steps=None, seed=ctx.seed)`` once per cell with
    N = :func:`pool_size` (so gFID at n=5000 and gFD at n=1000 share samples) and returns the
    first ``n``.
    """
    m = memo(ctx)
    have: ImageSplit | None = m.get(GENERATED)
    if have is None or len(have) < n:
        ds = ctx.dataset
        total = pool_size(ctx, GENERATED, n)
        labels = cyclic_labels(total, ds.num_classes)
        with torch.no_grad():
            images = adapter.sample(total, labels, steps=None, seed=ctx.seed)
        check_image_batch(images, ds.channels, ds.resolution, f"{adapter.registry_name}.sample")
        if len(images) != total:
            raise MetricError(f"{adapter.registry_name}.sample({total}) returned {len(images)} images")
        have = m[GENERATED] = ImageSplit(images.cpu(), labels)
        _save_grid_once(ctx, "samples.png", have.images[:GRID_TILES], nrow=ds.num_classes)
    return have.head(n)


def reference_test(ctx: Any, n: int) -> ImageSplit:
    """The first ``n`` test images (the reconstruction targets); error if the split is shorter."""
    test = ctx.dataset.test
    if len(test) < n:
        raise MetricError(f"metric asks for n={n} test images but the data set's test split has {len(test)} "
                          "(raise dataset.n_test or lower the metric's n)")
    return test.head(n)


def reference_train_balanced(ctx: Any, n: int) -> ImageSplit:
    """``n`` class-balanced training images (:meth:`ImageSplit.class_balanced`), the gFID reference."""
    train = ctx.dataset.train
    if len(train) < n:
        raise MetricError(f"metric asks for n={n} training images but the train split has {len(train)} "
                          "(raise dataset.n_train or lower the metric's n)")
    return train.class_balanced(n)


def reconstructed(adapter: Any, ctx: Any, n: int) -> ImageSplit:
    """``decode(encode(x))`` of the first ``n`` test images: uint8 [n, C, H, W], labels of x.

    Reconstructs once per cell the largest ``n`` of the ``reconstructed`` pool, in chunks.
    """
    m = memo(ctx)
    have: ImageSplit | None = m.get(RECONSTRUCTED)
    if have is None or len(have) < n:
        ds = ctx.dataset
        ref = reference_test(ctx, pool_size(ctx, RECONSTRUCTED, n))
        parts = []
        with torch.no_grad():
            for i in range(0, len(ref), RECON_BATCH):
                # CPU uint8 in, as the data sets hand it out; adapters move it to their device
                parts.append(adapter.decode(adapter.encode(ref.images[i: i + RECON_BATCH])).cpu())
        images = torch.cat(parts)
        check_image_batch(images, ds.channels, ds.resolution, f"{adapter.registry_name}.decode")
        if len(images) != len(ref):
            raise MetricError(f"{adapter.registry_name}: decode(encode(x)) of {len(ref)} images gave {len(images)}")
        have = m[RECONSTRUCTED] = ImageSplit(images, ref.labels)
        k = min(GRID_TILES, len(ref))
        row = min(10, k)
        if row:  # rows alternate: `row` originals, then their reconstructions
            k -= k % row
            tiles = torch.cat([t for r in range(0, k, row) for t in (ref.images[r: r + row], images[r: r + row])])
            _save_grid_once(ctx, "reconstructions.png", tiles, nrow=row)
    return have.head(n)


def _save_grid_once(ctx: Any, name: str, images: torch.Tensor, nrow: int) -> Path | None:
    """Write uint8 [k, C, H, W] as one PNG grid into ``ctx.artifact_dir`` (once per cell)."""
    from torchvision.utils import save_image

    m = memo(ctx)
    flag = f"grid:{name}"
    if m.get(flag) or len(images) == 0 or getattr(ctx, "artifact_dir", None) is None:
        return None
    path = Path(ctx.artifact_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(images.float() / 255.0, path, nrow=nrow, padding=1, pad_value=1.0)
    m[flag] = path
    return path
