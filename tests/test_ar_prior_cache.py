"""The AR prior's key/value cache in ancestral sampling: same logits and samples as recomputing the prefix."""
from __future__ import annotations

import torch

from adapters.tokenizers.ar_prior import ARPrior
from adapters.tokenizers.params import PriorConfig
from bench.adapter import count_nfe  # noqa: F401  (next_logits counts NFE through it)
from bench.training import sample_autoregressive


def _prior(seed: int = 0) -> ARPrior:
    torch.manual_seed(seed)
    allowed = torch.ones(6, 11, dtype=torch.bool)
    allowed[0, 5:] = False  # a VCQ-like restriction at the first position
    return ARPrior(11, 6, 3, PriorConfig(width=32, layers=2, heads=2), allowed).eval()


def _uncached(prior: ARPrior):
    return lambda tokens, labels: prior.logits_from_embeds(prior.embed(prior.input_ids(tokens, labels)))[:, -1].float()


@torch.no_grad()
def test_cached_logits_equal_recomputed_ones_at_every_position():
    prior = _prior()
    labels = torch.tensor([0, 1, 2, 3, 1])  # 3 = the null class
    seq = torch.randint(0, 5, (5, 6), generator=torch.Generator().manual_seed(1))
    for t in range(6):
        got = prior.next_logits(seq[:, :t], labels)
        assert prior._kv is not None and prior._kv[0].shape == (5, t + 1)  # the cache followed the prefix
        torch.testing.assert_close(got, _uncached(prior)(seq[:, :t], labels), rtol=1e-5, atol=1e-5)
    # a prefix that does not extend the cached one is computed afresh (not from a stale cache)
    other = seq.clone()
    other[:, 0] = (other[:, 0] + 1) % 5
    torch.testing.assert_close(prior.next_logits(other[:, :3], labels), _uncached(prior)(other[:, :3], labels),
                               rtol=1e-5, atol=1e-5)


def test_sampling_with_the_cache_draws_the_same_sequences():
    prior = _prior(3)
    labels = torch.arange(40) % 4
    with torch.no_grad():
        ref = sample_autoregressive(_uncached(prior), labels, 6, 7, 1.0, prior.allowed, None, 16)
    got = prior.sample(labels, seed=7, batch_size=16)
    assert torch.equal(got, ref)
    assert prior._kv is None  # nothing kept after sampling


def test_no_cache_while_training_or_with_autograd():
    prior = _prior()
    labels = torch.tensor([0, 1])
    prior.train()
    prior.next_logits(torch.zeros(2, 2, dtype=torch.long), labels)
    assert prior._kv is None
    prior.eval()
    with torch.enable_grad():
        prior.next_logits(torch.zeros(2, 2, dtype=torch.long), labels)
    assert prior._kv is None
