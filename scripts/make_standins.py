"""Stand-in data and checkpoints in the exact layouts the paper-scale suites read.

    .venv/bin/python scripts/make_standins.py OUTDIR [--image-size 64] [--cifar-per-batch 20]

Writes under OUTDIR (nothing here is real data; never commit it):

* ``imagenet/train/<wnid>/*.JPEG``, ``imagenet/val/<wnid>/*.JPEG``: a few classes of small noise
  images (``--image-size``; the loader resizes and centre-crops them to the suite's resolution);
* ``imagenet/VIRTUAL_imagenet256_labeled.npz``: an ADM-style reference batch, ``arr_0`` uint8
  [N, 256, 256, 3] and ``mu`` [2048] / ``sigma`` [2048, 2048] (the Inception pool-3 feature dim);
* ``cifar10/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}``: CIFAR-10 python
  pickle batches, and ``cifar10/checksums.md5`` (``md5sum`` format) naming their own md5s: the
  harness checks a batch against the published release's md5 unless ``CIFAR10_CHECKSUMS`` names a
  checksums file, so the check still runs on a stand-in;
* ``qwen3/``: a tiny randomly initialised Qwen3 (``transformers.Qwen3Config``) in the Hugging Face
  layout (config.json, model.safetensors, tokenizer.json, tokenizer_config.json), for ``peft_qwen3_8b``
  through the same loading path as Qwen3-8B; the tokenizer is the PEFT tiny family's byte-level BPE
  trained here on local text (:func:`adapters.peft.qwen3_tiny.train_tokenizer`);
* ``llama/``: a tiny randomly initialised Llama checkpoint (same tokenizer) for ``llm_internals_scaled``.

Prints the environment variables to export. Deterministic given ``--seed``.
"""
from __future__ import annotations

import argparse
import hashlib
import pickle
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WNIDS = ("n01440764", "n01443537", "n01484850", "n01491361")  # the first four ILSVRC 2012 classes
CIFAR_LABELS = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
FEATURE_DIM = 2048  # Inception-v3 pool-3, the ADM batch's mu / sigma size


def _noise_images(rng: np.random.Generator, n: int, size: int, label: int) -> np.ndarray:
    """uint8 [n, size, size, 3]: a per-class colour plus low-frequency noise (not constant: FID needs spread)."""
    base = np.array([(label * 67) % 256, (label * 131 + 40) % 256, (label * 29 + 90) % 256], dtype=np.float32)
    small = rng.normal(0, 60, size=(n, 8, 8, 3)).astype(np.float32)
    up = np.repeat(np.repeat(small, size // 8 + 1, axis=1), size // 8 + 1, axis=2)[:, :size, :size]
    fine = rng.normal(0, 20, size=(n, size, size, 3)).astype(np.float32)
    return np.clip(base + up + fine, 0, 255).astype(np.uint8)


def make_imagenet(out: Path, rng, size: int, n_train: int, n_val: int, n_ref: int) -> Path:
    from PIL import Image

    root = out / "imagenet"
    for split, n in (("train", n_train), ("val", n_val)):
        for c, wnid in enumerate(WNIDS):
            d = root / split / wnid
            d.mkdir(parents=True, exist_ok=True)
            for i, img in enumerate(_noise_images(rng, n, size, c)):
                Image.fromarray(img).save(d / f"{wnid}_{split}_{i:04d}.JPEG", format="JPEG", quality=90)
    # ADM reference batch: images and precomputed statistics (a positive-definite sigma)
    arr = np.concatenate([_noise_images(rng, n_ref // len(WNIDS) + 1, 256, c) for c in range(len(WNIDS))])[:n_ref]
    a = rng.normal(0, 0.1, size=(FEATURE_DIM, 64))
    sigma = a @ a.T + 0.01 * np.eye(FEATURE_DIM)
    mu = rng.normal(0.3, 0.1, size=FEATURE_DIM)
    np.savez(root / "VIRTUAL_imagenet256_labeled.npz", arr_0=arr, mu=mu, sigma=sigma)
    return root


def make_cifar10(out: Path, rng, per_batch: int) -> Path:
    root = out / "cifar10"
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        labels = [int(i % 10) for i in range(per_batch)]
        imgs = np.concatenate([_noise_images(rng, 1, 32, y) for y in labels])  # [n, 32, 32, 3]
        data = np.ascontiguousarray(imgs.transpose(0, 3, 1, 2).reshape(per_batch, 3072))  # the release's row layout
        batch = {b"batch_label": name.encode(), b"labels": labels, b"data": data,
                 b"filenames": [f"standin_{name}_{i}.png".encode() for i in range(per_batch)]}
        (d / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {b"num_cases_per_batch": per_batch, b"label_names": [s.encode() for s in CIFAR_LABELS], b"num_vis": 3072}
    (d / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    lines = [f"{hashlib.md5((d / n).read_bytes(), usedforsecurity=False).hexdigest()}  {n}"
             for n in names + ["batches.meta"]]
    (root / "checksums.md5").write_text("\n".join(lines) + "\n")
    return root


def _tokenizer(vocab: int):
    from adapters.peft.qwen3_tiny import EOS, corpus_text, train_tokenizer

    text, _ = corpus_text()
    return train_tokenizer(text[:400_000], vocab), EOS


def _save(model, tok, d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(d, safe_serialization=True)
    tok.save_pretrained(d)
    return d


def make_qwen3(out: Path, tok, seed: int) -> Path:
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen3Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=2048,
                      tie_word_embeddings=True, eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id,
                      bos_token_id=None)
    return _save(Qwen3ForCausalLM(cfg), tok, out / "qwen3")


def make_llama(out: Path, tok, seed: int) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed + 1)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=2048,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id, bos_token_id=None)
    return _save(LlamaForCausalLM(cfg), tok, out / "llama")


# -- peft_qwen3_8b: its four lm-eval tasks as local stand-ins -------------------------------------------
def _mc(task: str, metrics: list[str], splits: tuple[str, ...]) -> str:
    files = "\n".join(f'    {sp}: "{{d}}/{task}/{sp}.jsonl"' for sp in splits)
    keys = "\n".join(f"  - metric: {m}\n    aggregation: mean\n    higher_is_better: true" for m in metrics)
    split_keys = ("training_split: train\n" if "train" in splits else "") + \
                 ("validation_split: validation\n" if "validation" in splits else "")
    return (f"# stand-in for lm-eval's {task} (scripts/make_standins.py): local JSONL, same task name and metric keys\n"
            f"task: {task}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n{files}\n"
            f"output_type: multiple_choice\n{split_keys}test_split: test\ndoc_to_text: text\ndoc_to_choice: choices\n"
            f"doc_to_target: label\ntarget_delimiter: \" \"\nmetric_list:\n{keys}\nmetadata:\n  version: 1.0\n")


def _gen(task: str, splits: tuple[str, ...], strict: bool) -> str:
    files = "\n".join(f'    {sp}: "{{d}}/{task}/{sp}.jsonl"' for sp in splits)
    split_keys = ("training_split: train\n" if "train" in splits else "") + \
                 ("validation_split: validation\n" if "validation" in splits else "")
    filters = ('filter_list:\n  - name: strict-match\n    filter:\n      - function: regex\n'
               '        regex_pattern: "#### (\\\\-?[0-9\\\\.\\\\,]+)"\n      - function: take_first\n') if strict else ""
    return (f"# stand-in for lm-eval's {task} (scripts/make_standins.py): local JSONL, same task name and metric keys\n"
            f"task: {task}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n{files}\n"
            f"output_type: generate_until\n{split_keys}test_split: test\ndoc_to_text: \"Question: {{{{question}}}}\\nAnswer:\"\n"
            f"doc_to_target: answer\ntarget_delimiter: \" \"\n"
            f"generation_kwargs:\n  until: [\"\\n\"]\n  do_sample: false\n  max_gen_toks: 8\n{filters}"
            f"metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n"
            f"metadata:\n  version: 1.0\n")


def make_lm_eval_tasks(out: Path, rng, per_split: int = 8) -> Path:
    """hellaswag, mathqa, gsm8k, minerva_math500 under the names and metric keys peft_qwen3_8b reads,
    as local JSONL tasks (lm-eval's own data sets are not obtainable offline)."""
    import json

    root = out / "lm_eval_tasks"
    words = ["red", "blue", "green", "cat", "dog", "bird", "sun", "rain", "tree", "stone", "river", "hill"]
    specs = {"hellaswag": ("mc", ("train", "validation", "test")), "mathqa": ("mc", ("train", "validation", "test")),
             "gsm8k": ("gen", ("train", "test")), "minerva_math500": ("gen", ("test",))}
    for task, (kind, splits) in specs.items():
        (root / task).mkdir(parents=True, exist_ok=True)
        for sp in splits:
            rows = []
            for i in range(per_split):
                a, b = int(rng.integers(1, 20)), int(rng.integers(1, 20))
                if kind == "mc":
                    ch = [str(w) for w in rng.choice(words, 4, replace=False)]
                    rows.append({"text": f"{task} {sp} {i}: the word is {ch[i % 4]}. Which word?", "choices": ch,
                                 "label": i % 4})
                else:
                    rows.append({"question": f"What is {a} plus {b}?", "answer": f"{a + b} #### {a + b}"
                                 if task == "gsm8k" else str(a + b)})
            (root / task / f"{sp}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        text = _mc(task, ["acc", "acc_norm"] if task == "hellaswag" else ["acc"], splits) if kind == "mc" \
            else _gen(task, splits, strict=task == "gsm8k")
        (root / f"{task}.yaml").write_text(text.replace("{d}", str(root)))
    return root


def make_peft_suite(out: Path, tasks_dir: Path) -> Path:
    """``peft_qwen3_8b`` reading the stand-in tasks (``dataset.root``, no lm-eval defaults) and allowed on
    the CPU; everything else (methods, budgets, metrics, claims) as in suites/peft_qwen3_8b.yaml."""
    import yaml

    src = Path(__file__).resolve().parents[1] / "suites" / "peft_qwen3_8b.yaml"
    suite = yaml.safe_load(src.read_text())
    suite["dataset"]["root"] = str(tasks_dir)
    suite["dataset"]["params"]["include_defaults"] = False
    suite["base_model"]["require_gpu"] = False  # the tiny stand-in runs on the CPU too (CUDA when present)
    d = out / "suites"
    d.mkdir(parents=True, exist_ok=True)
    dst = d / "peft_qwen3_8b.yaml"
    dst.write_text(f"# stand-in copy of {src.name} (scripts/make_standins.py): dataset.root -> local tasks\n"
                   + yaml.safe_dump(suite, sort_keys=False))
    return dst


def make_all(out: Path, image_size: int = 64, cifar_per_batch: int = 20, n_train: int = 8, n_val: int = 4,
             n_ref: int = 16, seed: int = 0) -> dict[str, str]:
    """Write every stand-in under ``out``; return the environment variables that point the harness at them."""
    out = out.resolve()
    rng = np.random.default_rng(seed)
    imagenet = make_imagenet(out, rng, image_size, n_train, n_val, n_ref)
    cifar = make_cifar10(out, rng, cifar_per_batch)
    tok, _ = _tokenizer(vocab=512)
    qwen3, llama = make_qwen3(out, tok, seed), make_llama(out, tok, seed)
    peft_suite = make_peft_suite(out, make_lm_eval_tasks(out, rng))
    return {
        "IMAGENET_DIR": str(imagenet),
        "ADM_REF_BATCH": str(imagenet / "VIRTUAL_imagenet256_labeled.npz"),
        "CIFAR10_DIR": str(cifar),
        "CIFAR10_CHECKSUMS": str(cifar / "checksums.md5"),
        "QWEN3_8B_DIR": str(qwen3),
        "LLM_INTERNALS_MODEL_DIR": str(llama),
        "STANDIN_PEFT_SUITE": str(peft_suite),  # not read by the harness: `bench run $STANDIN_PEFT_SUITE`
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outdir", type=Path)
    ap.add_argument("--image-size", type=int, default=64, help="side of the ImageNet stand-in JPEGs [64]")
    ap.add_argument("--cifar-per-batch", type=int, default=20, help="images per CIFAR-10 batch file [20]")
    ap.add_argument("--imagenet-per-class", type=int, default=8, help="train images per class [8]; val: half")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    env = make_all(a.outdir, a.image_size, a.cifar_per_batch, a.imagenet_per_class, max(1, a.imagenet_per_class // 2),
                   seed=a.seed)
    print(f"# stand-ins written under {a.outdir.resolve()} (not real data: results on them mean nothing)")
    for k, v in env.items():
        print(f"export {k}={v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
