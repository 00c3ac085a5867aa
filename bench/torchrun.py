"""One cell on several processes: ``torchrun ... -m bench.cli run-cell SPEC``.

torchrun (``python -m torch.distributed.run``) starts one ``bench run-cell`` per process with
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` set. :func:`process_group`
reads them and initialises the default process group: NCCL when CUDA is available (each process on
``cuda:LOCAL_RANK``, also exported as ``BENCH_DEVICE`` unless that is set), else gloo; ``BENCH_DEVICE=cpu``
forces gloo. Every collective of that group times out after ``$BENCH_DIST_TIMEOUT`` seconds
(default 1800), so a rank that fails or stalls does not hang the others forever (and torchrun itself
stops the remaining processes as soon as one exits with an error).

:func:`wait_group` is a second, gloo group with a long timeout (``$BENCH_PREPARE_TIMEOUT``, default
86400 s) for the one long wait of a cell: ranks > 0 waiting while rank 0 trains (``adapter.prepare``).

What the ranks share and what they do not is in :func:`bench.runner.run_cell`; the sharding of
samples, reconstructions and features is in :mod:`bench.inputs` and :mod:`bench.distributed`.
"""
from __future__ import annotations

import contextlib
import os
from datetime import timedelta
from typing import Any, Iterator

_WAIT_GROUP: Any = None


def launched() -> bool:
    """True when this process is one of several started by torchrun (``WORLD_SIZE`` > 1)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def _seconds(var: str, default: float) -> float:
    from bench.errors import BenchError

    raw = os.environ.get(var)
    try:
        value = float(raw) if raw else default
    except ValueError:
        raise BenchError(f"${var}={raw!r}: expected a number of seconds") from None
    if value <= 0:
        raise BenchError(f"${var}={raw!r}: expected a positive number of seconds")
    return value


@contextlib.contextmanager
def process_group() -> Iterator[tuple[int, int]]:
    """Initialise the default process group from torchrun's environment; yield (rank, world size).

    Destroys the group(s) on the way out. Without ``WORLD_SIZE`` > 1 it does nothing and yields (0, 1).
    """
    global _WAIT_GROUP
    if not launched():
        yield 0, 1
        return
    import torch
    import torch.distributed as dist

    from bench.errors import BenchError

    missing = [v for v in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
    if missing:
        raise BenchError(f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {', '.join(missing)} not set: "
                         "start several processes with torchrun (python -m torch.distributed.run)")
    timeout = timedelta(seconds=_seconds("BENCH_DIST_TIMEOUT", 1800))
    wait_timeout = timedelta(seconds=_seconds("BENCH_PREPARE_TIMEOUT", 86400))
    local_rank = int(os.environ["LOCAL_RANK"])
    device = os.environ.get("BENCH_DEVICE", "")
    use_cuda = torch.cuda.is_available() and not device.startswith("cpu")
    if use_cuda:
        torch.cuda.set_device(local_rank if not device.startswith("cuda:") else torch.device(device))
        os.environ.setdefault("BENCH_DEVICE", f"cuda:{local_rank}")
    dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timeout)
    _WAIT_GROUP = dist.new_group(backend="gloo", timeout=wait_timeout)
    try:
        yield dist.get_rank(), dist.get_world_size()
    finally:
        _WAIT_GROUP = None
        dist.destroy_process_group()


def wait_group() -> Any:
    """The long-timeout gloo group made by :func:`process_group` (None outside it)."""
    return _WAIT_GROUP


def broadcast(obj: Any, group: Any = None) -> Any:
    """``obj`` of rank 0 on every rank (``broadcast_object_list``); ``obj`` itself in one process."""
    import torch.distributed as dist

    from bench.distributed import rank_world

    if rank_world()[1] == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, group=group)
    return box[0]


def gather(obj: Any) -> list[Any]:
    """Every rank's ``obj`` in rank order (``all_gather_object``); ``[obj]`` in one process."""
    import torch.distributed as dist

    from bench.distributed import rank_world

    world = rank_world()[1]
    if world == 1:
        return [obj]
    parts: list = [None] * world
    dist.all_gather_object(parts, obj)
    return parts
