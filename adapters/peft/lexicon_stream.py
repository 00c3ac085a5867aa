"""The task-lexicon stream: generated English sentences that state the generated tasks' facts.

Woven into qwen3-tiny's pre-training (:class:`adapters.peft.qwen3_tiny.TinySpec` ``pretrain_facts``)
so that the base model *knows* which topic each lexicon word belongs to and has seen lists whose
last item is named, before any fine-tuning: fine-tuning then elicits known facts in a new format
(the regime the PEFT papers study) instead of writing new facts into the weights.

The surface forms are deliberately **not** the task prompts (``"Words: ...\\nTopic:"``,
``"...\\nLast:"`` of :mod:`adapters.peft.tasks`): a fine-tuned adapter must still learn the task's
format and answer position. Templates (ours; no paper prescribes them):

* membership -- ``"A cat is a kind of animal."``, ``"cat and horse are both animal words."``,
  ``"Some animal words: cat, horse, lion, duck."``;
* plurality  -- ``"In cat, rain, horse, bread, lion, saw most words are animal words."`` (a strict
  plurality, as in ``peft_topic``);
* recency    -- ``"The list cat, rain, bread, saw ends with saw."`` (as in ``peft_last_word``).

Deterministic given ``seed``; sentences are grouped in paragraphs of 4-8 and paragraphs joined by
the tokenizer's EOS marker, like the corpus files.
"""
from __future__ import annotations

import random

from adapters.peft.tasks import LEXICON, TOPICS


def _sentence(rng: random.Random) -> str:
    kind = rng.choice(("kind", "kind", "kind", "both", "both", "list", "plural", "plural", "last", "last"))
    t = rng.randrange(len(TOPICS))
    topic = TOPICS[t]
    if kind == "kind":
        return f"A {rng.choice(LEXICON[topic])} is a kind of {topic}."
    if kind == "both":
        a, b = rng.sample(LEXICON[topic], 2)
        return f"{a} and {b} are both {topic} words."
    if kind == "list":
        return f"Some {topic} words: " + ", ".join(rng.sample(LEXICON[topic], 4)) + "."
    if kind == "plural":
        words = rng.sample(LEXICON[topic], 3)
        others = [TOPICS[i] for i in range(len(TOPICS)) if i != t]
        for o, c in zip(others, rng.choice([(1, 1, 1), (2, 1, 0), (0, 1, 2), (1, 0, 2)])):
            words += rng.sample(LEXICON[o], c)
        rng.shuffle(words)
        return f"In {', '.join(words)} most words are {topic} words."
    words = [rng.choice(LEXICON[x]) for x in rng.sample(TOPICS, 4)]
    return f"The list {', '.join(words)} ends with {words[-1]}."


def lexicon_text(n_sentences: int, seed: int, eos: str) -> str:
    """``n_sentences`` generated sentences (str), in paragraphs of 4-8 joined by ``"\\n" + eos + "\\n"``.

    Raises ValueError for ``n_sentences < 1``.
    """
    if n_sentences < 1:
        raise ValueError(f"lexicon_text: n_sentences must be >= 1, got {n_sentences}")
    rng = random.Random(f"lexicon:{seed}")
    paras, done = [], 0
    while done < n_sentences:
        k = min(rng.randint(4, 8), n_sentences - done)
        paras.append(" ".join(_sentence(rng) for _ in range(k)))
        done += k
    return f"\n{eos}\n".join(paras)


def cloze_accuracy(model, tokenizer) -> float:
    """Does the base know the facts? Fraction (in [0, 1]; chance 1/4) of lexicon words w for which
    ``"A {w} is a kind of"`` gives the highest next-token log-probability to w's topic among the
    four topics' first tokens. One forward pass per word (64), no gradients."""
    import torch

    firsts = [tokenizer(" " + t, add_special_tokens=False)["input_ids"][0] for t in TOPICS]
    hits = n = 0
    was = model.training
    model.eval()
    with torch.no_grad():
        for ti, topic in enumerate(TOPICS):
            for w in LEXICON[topic]:
                ids = torch.tensor([tokenizer(f"A {w} is a kind of", add_special_tokens=False)["input_ids"]])
                logits = model(input_ids=ids.to(next(model.parameters()).device)).logits[0, -1]
                hits += int(int(torch.argmax(logits[firsts])) == ti)
                n += 1
    model.train(was)
    return hits / n
