"""``qwen3-tiny``: a small :class:`transformers.Qwen3Config` model, pre-trained briefly here.

The same code path as Qwen3-8B (``Qwen3ForCausalLM``, q/k/v/o + gate/up/down projections,
q_norm/k_norm, RoPE, GQA), sized for two CPU cores. It is pre-trained on local English text
only (the Debian licence texts under ``/usr/share/common-licenses`` and CPython's
``pydoc_data/topics.py`` documentation), with a byte-level BPE tokenizer trained here with
``tokenizers``. Nothing is downloaded.

Weights and tokenizer are cached under ``results/cache/qwen3_tiny/<key>/`` where ``key`` is the
:func:`bench.context.stable_hash` of the configuration, the pre-training recipe and the corpus'
sha256; the directory is written to a temporary name and renamed, so an interrupted run never
leaves an entry a rerun would trust. Given the same machine, software and corpus the result is
deterministic (seeded generators; CPU kernels are deterministic at a fixed thread count).
"""
from __future__ import annotations

import hashlib
import json
import os
import sysconfig
import time
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from bench import cache_tree
from bench.context import Cache, stable_hash
from bench.training import Schedule, Update, fit

EOS = "<|endoftext|>"


from adapters.peft.base_specs import TinySpec  # noqa: E402,F401  (the light schema, re-exported)


def _say(msg: str) -> None:
    import sys

    print(msg, file=sys.stderr, flush=True)


# -- corpus --------------------------------------------------------------------------------------
def corpus_files() -> list[Path]:
    """The local text files pre-training reads, in a fixed order (symlinks de-duplicated)."""
    files: list[Path] = []
    seen: set[str] = set()
    lic = Path("/usr/share/common-licenses")
    if lic.is_dir():
        for p in sorted(lic.iterdir()):
            rp = os.path.realpath(p)
            if p.is_file() and rp not in seen:
                seen.add(rp)
                files.append(Path(rp))
    topics = Path(sysconfig.get_paths()["stdlib"]) / "pydoc_data" / "topics.py"
    if topics.is_file():
        files.append(topics)
    return files


def corpus_text() -> tuple[str, str]:
    """(text, sha256 hex) of the pre-training corpus: files joined by the EOS marker."""
    parts = []
    for p in corpus_files():
        parts.append(p.read_text(encoding="utf-8", errors="replace"))
    if not parts:
        # Fall back to this package's own sources so the harness still runs on a bare system.
        for p in sorted(Path(__file__).parent.glob("*.py")):
            parts.append(p.read_text())
    text = f"\n{EOS}\n".join(parts)
    return text, hashlib.sha256(text.encode()).hexdigest()


# -- tokenizer -------------------------------------------------------------------------------------
def train_tokenizer(text: str, vocab: int):
    """A byte-level BPE (GPT-2 style pre-tokenisation) trained on ``text``, as a HF fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        min_frequency=2,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    chunks = text.split(f"\n{EOS}\n")
    tok.train_from_iterator(chunks, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS, pad_token=EOS, bos_token=None, model_max_length=10**6
    )


def qwen3_config(spec: TinySpec, vocab_size: int, eos_id: int):
    from transformers import Qwen3Config

    return Qwen3Config(
        vocab_size=vocab_size,
        hidden_size=spec.hidden,
        intermediate_size=spec.intermediate,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.kv_heads,
        head_dim=spec.head_dim,
        max_position_embeddings=spec.max_position,
        tie_word_embeddings=True,
        rope_theta=10000.0,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        bos_token_id=None,
        attention_dropout=0.0,
    )


def cache_key(spec: TinySpec, corpus_sha: str) -> str:
    from bench import HARNESS_VERSION

    return stable_hash({"spec": spec.identity(), "corpus": corpus_sha, "v": HARNESS_VERSION, "impl": 1})


# -- pre-training ----------------------------------------------------------------------------------
def pretrain(spec: TinySpec, out_dir: Path, log=_say) -> dict:
    """Train tokenizer + model from scratch; save both to ``out_dir`` (HF layout). Returns stats.

    Batches are random windows of ``pretrain_seq`` tokens of the tokenised corpus (int64
    [pretrain_batch, pretrain_seq]); the loss is next-token cross-entropy in nats.
    """
    from transformers import Qwen3ForCausalLM

    text, sha = corpus_text()
    t0 = time.perf_counter()
    facts = ""
    if spec.pretrain_facts:
        from adapters.peft.lexicon_stream import lexicon_text

        facts = lexicon_text(spec.facts_sentences, spec.facts_seed, EOS)
    tokenizer = train_tokenizer(text + (f"\n{EOS}\n" + facts if facts else ""), spec.vocab)
    ids = torch.tensor(tokenizer(text)["input_ids"], dtype=torch.long)
    fact_ids = torch.tensor(tokenizer(facts)["input_ids"], dtype=torch.long) if facts else None
    torch.manual_seed(spec.seed)
    cfg = qwen3_config(spec, len(tokenizer), tokenizer.eos_token_id)
    model = Qwen3ForCausalLM(cfg)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=spec.pretrain_lr, weight_decay=0.01, betas=(0.9, 0.98))
    warm = max(1, spec.pretrain_steps // 20)
    schedule = Schedule("cosine", spec.pretrain_steps, warm, floor=0.1)
    update = Update(opt, schedule, 1.0, model.parameters(), "qwen3-tiny pre-training")
    g = torch.Generator().manual_seed(spec.seed)
    n = ids.numel() - spec.pretrain_seq - 1
    nf = fact_ids.numel() - spec.pretrain_seq - 1 if fact_ids is not None else 0
    if fact_ids is not None and nf < 1:
        raise ValueError(f"base_model.facts_sentences: the stream ({fact_ids.numel()} tokens) is shorter "
                         f"than pretrain_seq ({spec.pretrain_seq})")

    def windows():
        for _ in range(spec.pretrain_steps):
            starts = torch.randint(0, n, (spec.pretrain_batch,), generator=g).tolist()
            if fact_ids is None:  # corpus only: exactly the draws the stream-less recipe made
                yield torch.stack([ids[s : s + spec.pretrain_seq] for s in starts])  # int64 [B, seq]
                continue
            from_facts = (torch.rand(spec.pretrain_batch, generator=g) < spec.pretrain_facts).tolist()
            fstarts = torch.randint(0, nf, (spec.pretrain_batch,), generator=g).tolist()
            yield torch.stack([fact_ids[f : f + spec.pretrain_seq] if use else ids[s : s + spec.pretrain_seq]
                               for s, f, use in zip(starts, fstarts, from_facts)])  # int64 [B, seq]

    def step_fn(step: int, batch: torch.Tensor):
        loss = model(input_ids=batch, labels=batch).loss
        return loss, {"loss": loss}

    def say_loss(key: str, value: float, step: int) -> None:
        log(f"[qwen3-tiny] pretrain step {step + 1}/{spec.pretrain_steps} loss {value:.3f}")

    res = fit(step_fn, windows(), spec.pretrain_steps, "qwen3-tiny pre-training", update,
              log=say_loss if log else None, log_every=100, log_last=True, show_progress=False)
    losses = res.history.get("loss", [])
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    stats = {
        "corpus_sha256": sha,
        "corpus_tokens": int(ids.numel()),
        "facts_tokens": int(fact_ids.numel()) if fact_ids is not None else 0,
        "corpus_files": [str(p) for p in corpus_files()],
        "final_loss": float(sum(losses[-20:]) / max(1, len(losses[-20:]))) if losses else float("nan"),
        "pretrain_s": time.perf_counter() - t0,
        "params": int(sum(p.numel() for p in model.parameters())),
        "spec": spec.model_dump(mode="json"),
    }
    if facts:  # the elicitation regime's premise, measured: the base knows the lexicon's topics
        from adapters.peft.lexicon_stream import cloze_accuracy

        stats["facts_cloze_acc"] = cloze_accuracy(model, tokenizer)
    (out_dir / "pretrain_stats.json").write_text(json.dumps(stats, indent=1))
    return stats


TRAIN_LOCK_TIMEOUT_S = 6 * 3600.0  # a cell waiting for another cell's pre-training of the same base


def ensure_qwen3_tiny(spec: TinySpec, cache: Cache, log=_say) -> Path:
    """The cache directory of the pre-trained tiny model, training it first if absent."""
    _, sha = corpus_text()
    key = cache_key(spec, sha)
    final = cache.root / "qwen3_tiny" / key
    # every file checked against the SHA256SUMS written with it; a damaged copy is moved aside and rebuilt
    if cache_tree.verified(final) is not None:
        return final
    from bench.context import LOCK_SUFFIX
    from bench.locks import file_lock

    # concurrent cells (a worker pool) wait on a per-key lock instead of pre-training the same base twice
    # (a dead worker's lock is released by the OS)
    with file_lock(final.with_name(final.name + ".train" + LOCK_SUFFIX), timeout=TRAIN_LOCK_TIMEOUT_S):
        if cache_tree.verified(final) is not None:
            return final  # another cell pre-trained it while this one waited
        tmp = cache_tree.temp_dir(final)
        _say(f"[qwen3-tiny] pre-training a {spec.layers}-layer d={spec.hidden} Qwen3 for {spec.pretrain_steps} "
             f"steps (once; cached as {final})")
        stats = pretrain(spec, tmp, log=log)
        _say(f"[qwen3-tiny] pre-trained in {stats['pretrain_s']:.0f}s, final loss {stats['final_loss']:.3f} nats/token")
        return cache_tree.publish(tmp, final)  # manifest + atomic rename; a racing winner's copy is kept


def load_qwen3_tiny(spec: TinySpec, cache: Cache, device: torch.device | str = "cpu", log=_say):
    """(model, tokenizer, stats): the cached pre-trained tiny Qwen3 in float32, eval mode, on ``device``,
    and its ``pretrain_stats.json`` (final_loss, facts_cloze_acc, ...; {} if absent)."""
    from transformers import AutoTokenizer, Qwen3ForCausalLM

    d = ensure_qwen3_tiny(spec, cache, log=log)
    tokenizer = AutoTokenizer.from_pretrained(d)
    # safetensors only: a pickled pytorch_model.bin in the cache is never loaded
    model = Qwen3ForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager", use_safetensors=True)
    model.to(device).eval()
    stats_file = d / "pretrain_stats.json"
    return model, tokenizer, (json.loads(stats_file.read_text()) if stats_file.is_file() else {})
