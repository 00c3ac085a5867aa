"""VCQ: schedules, and no code >= K_t ever leaves the quantizer or the prior's sampler."""
import pytest
import torch

from adapters.tokenizers.vq_tokenizer import TokenizerConfig, VQTokenizer
from adapters.tokenizers.vcq import codebook_schedule
from adapters.tokenizers.ar_prior import ARPrior, PriorBudget, PriorConfig, train_prior


@pytest.mark.parametrize("kind", ["log-linear", "doubling", "linear"])
def test_schedule_monotone_from_kmin_to_kmax(kind):
    s = codebook_schedule(kind, 2, 256, 16)
    assert s[0] == 2 and s[-1] == 256 and len(s) == 16
    assert all(a <= b for a, b in zip(s, s[1:]))


def test_schedule_values():
    assert codebook_schedule("doubling", 2, 64, 8) == [2, 4, 8, 16, 32, 64, 64, 64]
    assert codebook_schedule("linear", 2, 10, 5) == [2, 4, 6, 8, 10]
    assert codebook_schedule("log-linear", 2, 256, 8) == [2, 4, 8, 16, 32, 64, 128, 256]


def test_quantizer_never_emits_code_beyond_kt():
    torch.manual_seed(0)
    sizes = codebook_schedule("log-linear", 2, 64, 6)
    tok = VQTokenizer(TokenizerConfig(length=6, width=32, depth=1, heads=2), sizes, 1, 28)
    imgs = torch.randint(0, 256, (300, 1, 28, 28), dtype=torch.uint8)
    tokens = tok.encode(imgs)
    assert (tokens < torch.tensor(sizes)).all()
    # The mask must bind: with uniform K_max the first position uses codes >= 2 for random images.
    free = VQTokenizer(TokenizerConfig(length=6, width=32, depth=1, heads=2), [64] * 6, 1, 28)
    free.load_state_dict({k: v for k, v in tok.state_dict().items() if k not in ("forbidden", "codebook_sizes_t")},
                         strict=False)
    assert (free.encode(imgs)[:, 0] >= 2).any()
    with pytest.raises(ValueError, match="outside its position's codebook"):
        tok.decode(torch.full((1, 6), 63))


def test_prior_sampling_respects_kt_even_after_training_on_unmasked_logits():
    torch.manual_seed(0)
    sizes = [2, 4, 8, 16]
    allowed = torch.arange(16)[None, :] < torch.tensor(sizes)[:, None]
    prior = ARPrior(16, 4, 3, PriorConfig(width=32, layers=1, heads=2, mask_logits_in_training=False), allowed)
    # Train on tokens that violate the mask so the unmasked logits favour forbidden codes.
    bad = torch.full((64, 4), 15)
    train_prior(prior, bad, torch.zeros(64, dtype=torch.long), PriorBudget(30, 32, 1e-2), 0, show_progress=False)
    s = prior.sample(torch.arange(200) % 3, temperature=1.0, seed=1)
    assert s.shape == (200, 4)
    assert (s < torch.tensor(sizes)).all()
