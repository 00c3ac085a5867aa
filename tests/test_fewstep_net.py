"""The few-step network can represent the data: its velocity field spans all 784 pixel directions,
and no part of the starting noise reaches the image unchanged (adapters/fewstep/net.py). The
former velocity head (``parameterisation="velocity"``) fails both checks: its velocities lie in one
width-dimensional affine subspace, and the noise outside it passes the Euler sampler untouched."""
from __future__ import annotations

import pytest
import torch

from adapters.fewstep import flow
from adapters.fewstep.net import PIXELS, VelocityNet

WIDTH = 32  # span of the former head <= 32 of 784 directions: the defect is large at this width


def velocity_span_rank(net: VelocityNet, n: int = 1500, steps: int = 4) -> int:
    """Rank of the affine span of the velocities over n random inputs at every time of the sampler's grid."""
    torch.manual_seed(1)
    vs = []
    for s in flow.grid(steps, 3.0)[:-1]:
        x = torch.randn(n // steps, 1, 28, 28)
        with torch.no_grad():
            vs.append(net(x, torch.full((len(x),), s), torch.arange(len(x)) % 4).reshape(len(x), PIXELS))
    v = torch.cat(vs).double()
    return int(torch.linalg.matrix_rank(v - v.mean(0), rtol=1e-7))


def noise_passthrough(net: VelocityNet, steps: int, n: int = 64) -> float:
    """|P (x(z + d) - x(z))| / |d| for directions d orthogonal to the head's output span (P the projector
    on that complement), averaged over n noises: 1 = that noise reaches the image unchanged, 0 = none."""
    torch.manual_seed(2)
    W = net.out.weight.detach().double()  # [784, width]: the head's column space
    q, _ = torch.linalg.qr(W)
    perp = torch.eye(PIXELS, dtype=torch.float64) - q @ q.T
    d = (perp @ torch.randn(PIXELS, n, dtype=torch.float64)).T  # [n, 784] in the complement
    d = (d / d.norm(dim=1, keepdim=True)).float().reshape(n, 1, 28, 28)
    z, y = torch.randn(n, 1, 28, 28), torch.arange(n) % 4
    with torch.no_grad():
        diff = (flow.euler(net, z + d, y, steps, 3.0) - flow.euler(net, z, y, steps, 3.0)).reshape(n, PIXELS).double()
    return float((diff @ perp).norm(dim=1).mean())


def test_velocity_field_is_full_rank():
    torch.manual_seed(0)
    net = VelocityNet(4, WIDTH, 2).eval()
    assert velocity_span_rank(net) == PIXELS


@pytest.mark.parametrize("steps", [1, 4, 100])
def test_no_noise_passes_through_to_the_image(steps):
    torch.manual_seed(0)
    net = VelocityNet(4, WIDTH, 2).eval()
    assert noise_passthrough(net, steps) < 1e-4


@pytest.mark.parametrize("steps", [1, 4])
def test_the_former_velocity_head_fails_both_checks(steps):
    torch.manual_seed(0)
    net = VelocityNet(4, WIDTH, 2, parameterisation="velocity").eval()
    assert velocity_span_rank(net) <= WIDTH
    assert noise_passthrough(net, steps) == pytest.approx(1.0, abs=1e-3)
