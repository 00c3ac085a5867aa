"""Per-step training time of a diffusion suite's methods, measured once to fix a wall-clock match.

The compute-matched control of the VADD comparison (arXiv 2505.17384, "an MDM trained for the
same wall-clock as VADD") must not set its steps from a timer at run time: the answer would
then depend on the machine and its load. Instead this tool measures seconds per training step
of each method (interleaved rounds, so load drifts hit every method alike), and the suite fixes
the matched step count as ``round(ref_steps * t_ref / t_mdm)`` in its ``budget`` override, with
the machine, date and ratio in a comment. Both cells log their real training seconds
(``train_seconds``, the ``diffusion_cost`` metric's "train s" column) so the board shows how well
the match held on the machine that ran it.

    python -m adapters.diffusion.timing fmnist_diffusion --reference vadd_step --match mdm_wall

A step here is exactly the training step of :meth:`DiffusionAdapter.train` (the method's loss,
backward, clipping, Adam, through :func:`bench.training.fit`) on random tokens of the suite's
V and N (shapes, not values, set the cost of these dense MLPs), at ``--threads`` threads (1 =
what each of ``make bench``'s two workers gets on a 2-core machine).
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch


def build(cell) -> object:
    """The cell's adapter, bound to a synthetic data set of its V (no data loaded)."""
    from bench import registry
    from bench.data.base import ImageDataset, ImageSplit

    registry.load_all()
    cls = registry.get(registry.ADAPTERS, "adapter", cell.adapter)
    a = cls(cls.Params.model_validate(cell.params), cell.seed)
    levels = int(cell.dataset.params.get("levels", 2)) if cell.dataset.name == "fmnist_quantized" else 256
    n = 512
    imgs = (torch.randint(0, levels, (n, 1, 28, 28)) * 255 // max(1, levels - 1)).to(torch.uint8)
    split = ImageSplit(imgs, torch.arange(n) % 10)
    a.bind(ImageDataset(f"fmnist_q{levels}", split, split, 10, 1, 28, "synthetic"))
    a.nets = a.build(a.net_config())
    return a


def time_steps(a, budget: dict, steps: int, seed: int = 0) -> tuple[float, float]:
    """(wall, process CPU) seconds of ``steps`` training steps of adapter ``a`` (built by :func:`build`)."""
    from adapters.diffusion.common import DiffusionBudget, tokens_of
    from bench.training import Schedule, Update, fit, minibatches

    b = DiffusionBudget.model_validate(budget)
    x = tokens_of(torch.randint(0, a.levels, (512, a.n_tokens)) * 256 // a.levels, a.levels)
    y = torch.arange(len(x)) % 10
    params = [p for net in a.nets.values() for p in net.parameters()]
    opt = torch.optim.Adam(params, lr=b.lr)
    update = Update(opt, Schedule("cosine", steps, warmup=1, floor=0.1), b.clip, what="timing")
    gen = torch.Generator().manual_seed(seed)

    def step_fn(step, idx):
        per_image, _ = a.loss(x[idx], a.labels(y[idx]), 1.0, gen)
        return per_image.mean() / a.n_tokens, {}

    for net in a.nets.values():
        net.train()
    t0, c0 = time.perf_counter(), time.process_time()
    fit(step_fn, minibatches(len(x), b.batch_size, steps, seed), steps, "timing", update, show_progress=False)
    return time.perf_counter() - t0, time.process_time() - c0


def main(argv: list[str] | None = None) -> None:
    from bench.plan import resolve

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("suite")
    ap.add_argument("--methods", default=None, help="comma-separated (default: every method)")
    ap.add_argument("--reference", default=None, help="method whose wall-clock is matched (e.g. vadd_step)")
    ap.add_argument("--match", default=None, help="method whose steps are set to match --reference (e.g. mdm_wall)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20, help="training steps per method per round")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    plan = resolve(args.suite, methods=args.methods.split(",") if args.methods else None, seeds=[0])
    cells = {c.method: c for c in plan.cells}
    adapters = {m: build(c) for m, c in cells.items()}
    for m, a in adapters.items():  # warm-up (allocator, kernels)
        time_steps(a, cells[m].budget, 3)
    wall: dict[str, list[float]] = {m: [] for m in cells}
    cpu_s: dict[str, list[float]] = {m: [] for m in cells}
    names = list(cells)
    for r in range(args.rounds):
        for m in names[r % len(names):] + names[: r % len(names)]:  # rotate the order each round
            w, c = time_steps(adapters[m], cells[m].budget, args.steps)
            wall[m].append(w / args.steps)
            cpu_s[m].append(c / args.steps)
    # the ratio uses process CPU seconds: with one thread that is the wall time of an unloaded machine,
    # and unlike wall time it does not count the time other processes of a shared machine take
    med = {m: statistics.median(v) for m, v in cpu_s.items()}
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor()
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {cpu}, {args.threads} thread(s), "
          f"load {open('/proc/loadavg').read().split()[0] if platform.system() == 'Linux' else '?'}, "
          f"{args.rounds} rounds x {args.steps} steps, median CPU s/step (wall s/step)")
    for m, v in med.items():
        spread = f"{min(cpu_s[m]):.4f}-{max(cpu_s[m]):.4f}"
        print(f"{m:14s} {v:.4f} CPU s/step (range {spread}; wall {statistics.median(wall[m]):.4f}), "
              f"train_steps {cells[m].budget['train_steps']}")
    if args.reference and args.match:
        ratio = med[args.reference] / med[args.match]
        ref_steps = cells[args.reference].budget["train_steps"]
        wr = statistics.median(wall[args.reference]) / statistics.median(wall[args.match])
        print(f"ratio {args.reference}/{args.match} = {ratio:.3f} (CPU; wall {wr:.3f}): {args.match} train_steps = "
              f"round({ref_steps} * {ratio:.3f}) = {round(ref_steps * ratio)}")


if __name__ == "__main__":
    main()
