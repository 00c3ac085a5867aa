"""Prefix-Tuning+: a zero memory leaves the model's output unchanged; the memory is what trains."""
from __future__ import annotations

import torch

from peft_helpers import tiny_base


def _ids(base):
    return torch.tensor([base.tokenizer("the cat sat on the mat")["input_ids"]])


def test_zero_memory_is_identity():
    from adapters.peft.prefix_plus import PrefixPlus

    for rank in (None, 3):
        base = tiny_base()
        ids = _ids(base)
        with torch.no_grad():
            ref = base.model(input_ids=ids).logits.clone()
        pp = PrefixPlus(base.model, rank=rank, feature_map="elu", seed=1)
        with torch.no_grad():
            out = base.model(input_ids=ids).logits
        assert torch.equal(out, ref)
        # a non-zero memory changes the output; detaching restores it
        with torch.no_grad():
            for m in pp.memories.values():
                (m.M if rank is None else m.B).normal_()
            changed = base.model(input_ids=ids).logits
        assert not torch.allclose(changed, ref)
        pp.detach()
        with torch.no_grad():
            assert torch.equal(base.model(input_ids=ids).logits, ref)


def test_memory_gets_gradient_and_reads_pre_rope_query():
    from adapters.peft.prefix_plus import PrefixPlus

    base = tiny_base()
    pp = PrefixPlus(base.model, rank=None, feature_map="gelu")
    ids = _ids(base)
    loss = base.model(input_ids=ids, labels=ids).loss
    loss.backward()
    grads = [m.M.grad for m in pp.memories.values()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for n, p in base.model.named_parameters() if "prefix_plus" not in n)
    # position independence of the added term: the same token at two positions gets the same q
    # (pre-RoPE), hence the same memory read-out in layer 0
    seen = {}
    attn = base.model.model.layers[0].self_attn
    def keep_q(m, a, o):
        seen["q"] = o.detach()

    h = attn.q_norm.register_forward_hook(keep_q)
    tok = base.tokenizer("cat")["input_ids"][0]
    with torch.no_grad():
        base.model(input_ids=torch.tensor([[tok, tok]]))
    h.remove()
    q = seen["q"]  # [1, 2, H, d]
    assert torch.allclose(q[0, 0], q[0, 1])
