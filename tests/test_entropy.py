"""Plug-in per-position conditional entropy, cliff position and the t* formula."""
import math

import numpy as np
import pytest

from bench.metrics.entropy import cliff_position, conditional_entropy_per_position, predicted_cliff


def test_entropy_exact_on_hand_made_sequences():
    # 4 sequences: z0 uniform over {0,1} (1 bit); given z0=0, z1 in {0,1} equally (1 bit); given z0=1, z1 fixed (0)
    # -> H_1 = 0.5*1 + 0.5*0 = 0.5 bits; every prefix of length 2 is then unique except (0,?)... check H_2 by hand.
    z = np.array([[0, 0, 5], [0, 1, 5], [1, 2, 5], [1, 2, 7]])
    h = conditional_entropy_per_position(z)
    assert h[0] == pytest.approx(1.0)
    assert h[1] == pytest.approx(0.5)
    # prefixes (0,0),(0,1) -> next fixed; (1,2) twice -> next in {5,7}: weight 2/4 * 1 bit
    assert h[2] == pytest.approx(0.5)


def test_entropy_zero_once_prefixes_unique():
    rng = np.random.default_rng(0)
    z = rng.integers(0, 256, size=(1000, 6))
    h = conditional_entropy_per_position(z)
    assert h[0] == pytest.approx(-(np.bincount(z[:, 0]) / 1000 * np.log2(np.bincount(z[:, 0]).clip(1) / 1000)).sum())
    # 256^3 >> 1000^2: prefixes of length 3 are unique for this seed, so H_t = 0 exactly from t = 3
    assert len({tuple(r) for r in z[:, :3]}) == 1000
    assert np.all(h[3:] == 0)
    assert h[1] > 0


def test_cliff_and_t_star_formula():
    for n, k in [(60000, 256), (60000, 16), (1_281_167, 16384), (1000, 2)]:
        assert predicted_cliff([k] * 64, n) == math.ceil(math.log2(n) / math.log2(k))
    # VCQ: first t with sum_{s<t} log2 K_s >= log2 N
    sizes = [2, 4, 8, 16, 32]  # cumulative bits 1, 3, 6, 10, 15
    assert predicted_cliff(sizes, 2**10) == 4
    assert predicted_cliff(sizes, 2**10 + 1) == 5
    assert cliff_position(np.array([3.0, 1.0, 0.01, 0.0]), 0.05) == 2
    assert cliff_position(np.array([3.0, 1.0]), 0.05) == 2
