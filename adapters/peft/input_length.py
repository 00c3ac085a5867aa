"""Input length as a controlled variable: a fixed filler passage read before every input.

Prefix-Tuning+'s mechanism (arXiv:2506.13674, Section 3, Eq. 2-3): in Prefix-Tuning the prefix
shares the softmax with the input, so its weight alpha_i shrinks as the input grows (and a long
prefix swamps a short input); Prefix-Tuning+ adds its term outside the softmax. To sweep the input
length without changing the task, a cell with ``input_filler_tokens: n`` makes its model read the
same ``n`` filler tokens (a neutral sentence, :data:`FILLER`, repeated and cut to ``n`` tokens)
before every sequence, in training **and** in lm-eval scoring: a forward pre-hook on the adapted
model prepends them to ``input_ids`` (and to ``attention_mask`` / ``labels`` when given, labels
-100), a forward hook drops their logits, so callers see the shapes they passed. The filler sits
after Prefix-Tuning's virtual tokens (peft adds those inside the wrapped forward) and before the
prompt; positions shift by ``n`` (RoPE), as they do for any longer input.
"""
from __future__ import annotations

import torch

FILLER = "This note is not part of the question below and changes nothing about it. "


def filler_ids(tokenizer, n: int) -> list[int]:
    """The first ``n`` token ids (int, n >= 1) of :data:`FILLER` repeated; ValueError for n < 1."""
    if n < 1:
        raise ValueError(f"filler_ids: n must be >= 1, got {n}")
    one = tokenizer(FILLER, add_special_tokens=False)["input_ids"]
    return (one * (n // max(1, len(one)) + 1))[:n]


class InputFiller:
    """Hooks on ``model`` (an HF causal LM or a peft model) prepending ``ids`` to every input.

    ``model(input_ids [B, T], attention_mask [B, T]?, labels [B, T]?)`` then runs on
    [B, n + T] and returns logits [B, T, V] (the filler's positions removed); the loss (when labels
    are given) counts only the caller's label tokens. :meth:`remove` takes the hooks off.
    """

    def __init__(self, model, ids: list[int]):
        self.n = len(ids)
        self.ids = torch.tensor(ids, dtype=torch.long)
        self._handles = [model.register_forward_pre_hook(self._pre, with_kwargs=True),
                         model.register_forward_hook(self._post, with_kwargs=True)]

    def _pre(self, module, args, kwargs):
        args, kwargs = list(args), dict(kwargs)
        ids = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
        B = ids.shape[0]
        pre = self.ids.to(ids.device).unsqueeze(0).expand(B, self.n)
        new = torch.cat([pre, ids], dim=1)
        if "input_ids" in kwargs:
            kwargs["input_ids"] = new
        else:
            args[0] = new
        mask = kwargs.get("attention_mask")
        if mask is not None:
            kwargs["attention_mask"] = torch.cat([mask.new_ones(B, self.n), mask], dim=1)
        labels = kwargs.get("labels")
        if labels is not None:
            kwargs["labels"] = torch.cat([labels.new_full((B, self.n), -100), labels], dim=1)
        return tuple(args), kwargs

    def _post(self, module, args, kwargs, out):
        out["logits"] = out["logits"][:, self.n:]
        return out

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
