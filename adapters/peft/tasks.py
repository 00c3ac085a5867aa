"""Fine-tuning tasks as lm-eval tasks: generated JSONL for ``qwen3-tiny``, standard tasks for 8B.

Generated tasks (deterministic given ``seed``; short-answer classification whose answer is one
word, scored by lm-eval's ``multiple_choice`` log-likelihood ranking):

* ``peft_topic``      -- "Words: cat rain dog bread tiger snow\\nTopic:" -> ``animal``; six words
  from four topic lexicons (animal / food / weather / tool); the label is the topic with the
  strict plurality (3 of 6 words, the other 3 spread so that no other topic has more than 2).
  4-way, chance 0.25.
* ``peft_last_word``  -- "Words: cat rain bread hammer\\nLast:" -> ``hammer``; one word from each
  topic in random order, the four words (sorted) are the choices: copying from a position.
  4-way, chance 0.25.
* ``peft_same_topic`` -- "Pair: cat horse\\nSame kind:" -> ``yes`` / ``no`` (balanced). Chance 0.5.
* ``peft_first_topic`` -- "Words: cat rain bread hammer\\nFirst kind:" -> topic of the first word.

(The tiny suite uses ``peft_topic`` and ``peft_last_word``: with the 300-step budget LoRA on
qwen3-tiny stayed at chance on ``peft_same_topic`` and ``peft_first_topic`` in development.)

Each has train / validation / test JSONL splits (disjoint texts) written under
``results/cache/peft_tasks/<key>/<task>/``. The lm-eval task YAMLs ship inside the repository
(``adapters/peft/lm_eval_tasks/*.yaml``) with the placeholder ``@DATA_DIR@``; :func:`materialise`
writes copies with the absolute path filled in to ``results/cache/peft_tasks/<key>/lm_eval/``,
the include path handed to ``TaskManager(include_path=..., include_defaults=False)``.

Training pairs for every task (generated or standard) come from lm-eval's own task object
(:func:`task_pairs`: ``doc_to_text`` + ``target_delimiter`` + the gold choice / target), so the
format trained on is exactly the format evaluated.
"""
from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import cache_tree
from bench.context import results_dir, stable_hash
from bench.locks import write_atomic

TASK_YAML_DIR = Path(__file__).parent / "lm_eval_tasks"
PLACEHOLDER = "@DATA_DIR@"

LEXICON: dict[str, list[str]] = {
    "animal": ["cat", "dog", "horse", "cow", "sheep", "goat", "mouse", "rabbit",
               "tiger", "lion", "bear", "wolf", "fox", "deer", "duck", "goose"],
    "food": ["bread", "cheese", "apple", "rice", "soup", "cake", "butter", "honey",
             "salad", "pasta", "bean", "corn", "egg", "milk", "plum", "pear"],
    "weather": ["rain", "snow", "wind", "storm", "cloud", "fog", "frost", "hail",
                "thunder", "sunshine", "drizzle", "breeze", "mist", "heat", "sleet", "gale"],
    "tool": ["hammer", "saw", "drill", "wrench", "chisel", "shovel", "rake", "axe",
             "pliers", "ladder", "needle", "knife", "spade", "file", "clamp", "brush"],
}
TOPICS = list(LEXICON)
GENERATED = ("peft_topic", "peft_same_topic", "peft_first_topic", "peft_last_word")


def offline_env(project_home: bool = False) -> None:
    """Force HF hub / datasets / transformers offline (no network attempt is ever made).

    With ``project_home`` (generated tasks), ``HF_HOME`` defaults to ``results/cache/hf_home`` so
    the JSONL's datasets cache stays inside the project; for standard tasks it is left alone, so
    the user's own Hugging Face cache (which holds those data sets) is used.
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    if project_home:
        os.environ.setdefault("HF_HOME", str(results_dir() / "cache" / "hf_home"))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# -- generation ------------------------------------------------------------------------------------
def _topic_doc(rng: random.Random) -> dict:
    label = rng.randrange(len(TOPICS))
    words = rng.sample(LEXICON[TOPICS[label]], 3)
    others = [i for i in range(len(TOPICS)) if i != label]
    # 3 distractors, at most 2 from any one other topic (the label keeps a strict plurality)
    pattern = rng.choice([(1, 1, 1), (2, 1, 0), (2, 0, 1), (1, 2, 0), (0, 2, 1), (1, 0, 2), (0, 1, 2)])
    for t, c in zip(others, pattern):
        words += rng.sample(LEXICON[TOPICS[t]], c)
    rng.shuffle(words)
    return {"text": "Words: " + " ".join(words) + "\nTopic:", "choices": TOPICS, "label": label}


def _same_topic_doc(rng: random.Random) -> dict:
    same = rng.random() < 0.5
    t1 = rng.randrange(len(TOPICS))
    if same:
        a, b = rng.sample(LEXICON[TOPICS[t1]], 2)
    else:
        t2 = rng.choice([t for t in range(len(TOPICS)) if t != t1])
        a, b = rng.choice(LEXICON[TOPICS[t1]]), rng.choice(LEXICON[TOPICS[t2]])
    return {"text": f"Pair: {a} {b}\nSame kind:", "choices": ["no", "yes"], "label": int(same)}


def _first_topic_doc(rng: random.Random) -> dict:
    label = rng.randrange(len(TOPICS))
    others = [t for t in range(len(TOPICS)) if t != label]
    words = [rng.choice(LEXICON[TOPICS[label]])]
    words += [rng.choice(LEXICON[TOPICS[rng.choice(others)]]) for _ in range(3)]
    tail = words[1:]
    rng.shuffle(tail)
    return {"text": "Words: " + " ".join([words[0]] + tail) + "\nFirst kind:", "choices": TOPICS, "label": label}


def _last_word_doc(rng: random.Random) -> dict:
    topics = rng.sample(TOPICS, 4)
    words = [rng.choice(LEXICON[t]) for t in topics]
    choices = sorted(words)
    return {"text": "Words: " + " ".join(words) + "\nLast:", "choices": choices, "label": choices.index(words[-1])}


GENERATORS = {"peft_topic": _topic_doc, "peft_same_topic": _same_topic_doc,
              "peft_first_topic": _first_topic_doc, "peft_last_word": _last_word_doc}


def generate_splits(task: str, seed: int, sizes: dict[str, int]) -> dict[str, list[dict]]:
    """Disjoint splits of unique documents (dicts with text / choices / label), deterministic.

    Each split is label-balanced (at most ceil(size / n_classes) documents per label). When the
    task's space of distinct texts is smaller than requested, splits are filled as far as it goes
    (``peft_same_topic`` has only 4*16*15 = 960 distinct "yes" pairs).
    """
    gen = GENERATORS[task]
    rng = random.Random(f"{task}:{seed}")
    seen: set[str] = set()
    out: dict[str, list[dict]] = {}
    for split in ("test", "validation", "train"):  # test first: it is never starved
        docs: list[dict] = []
        per_label: dict[int, int] = {}
        cap = None
        tries = 0
        while len(docs) < sizes[split] and tries < 50 * sizes[split] + 1000:
            tries += 1
            d = gen(rng)
            if cap is None:  # label-balanced: at most ceil(size / n_classes) per label
                cap = -(-sizes[split] // len(d["choices"]))
            if d["text"] in seen or per_label.get(d["label"], 0) >= cap:
                continue
            seen.add(d["text"])
            per_label[d["label"]] = per_label.get(d["label"], 0) + 1
            docs.append(d)
        out[split] = docs
    return out


def write_generated(tasks: list[str], seed: int, sizes: dict[str, int], root: Path | None = None) -> Path:
    """Write JSONL splits (``<root>/data/``, checksummed) and templated lm-eval YAMLs (``<root>/lm_eval/``,
    pointing at the data); return ``root`` (cached by hash)."""
    unknown = [t for t in tasks if t not in GENERATORS]
    if unknown:
        from bench.errors import BenchError

        raise BenchError(f"unknown generated task(s) {unknown}; known: {sorted(GENERATORS)}")
    key = stable_hash({"tasks": sorted(tasks), "seed": seed, "sizes": sizes, "impl": 2})
    root = root or (results_dir() / "cache" / "peft_tasks" / key)
    data = root / "data"  # the checksummed tree (bench.cache_tree); lm_eval/ YAMLs beside it are rewritten each call
    if cache_tree.verified(data) is not None:
        materialise(data, root)  # cheap; keeps the YAML copies in step with the shipped ones
        return root
    tmp = cache_tree.temp_dir(data)
    for t in tasks:
        splits = generate_splits(t, seed, sizes)
        (tmp / t).mkdir(parents=True, exist_ok=True)
        for split, docs in splits.items():
            with open(tmp / t / f"{split}.jsonl", "w") as f:
                for d in docs:
                    f.write(json.dumps(d, sort_keys=True) + "\n")
    (tmp / "DONE").write_text(json.dumps({"tasks": tasks, "seed": seed, "sizes": sizes}))
    cache_tree.publish(tmp, data)
    materialise(data, root)
    return root


def materialise(data_root: Path, out_root: Path, yaml_dir: Path = TASK_YAML_DIR) -> Path:
    """Copy the shipped task YAMLs to ``out_root/lm_eval`` with ``@DATA_DIR@`` -> ``data_root``."""
    inc = out_root / "lm_eval"
    inc.mkdir(parents=True, exist_ok=True)
    for y in sorted(yaml_dir.glob("*.yaml")):
        text = y.read_text().replace(PLACEHOLDER, str(data_root.resolve()))
        write_atomic(inc / y.name, text.encode())  # unique temp name + rename: concurrent cells may rewrite it
    return inc


# -- lm-eval task objects --------------------------------------------------------------------------
def task_manager(include_path: Path | None, include_defaults: bool):
    offline_env()
    from lm_eval.tasks import TaskManager

    return TaskManager(
        include_path=str(include_path) if include_path else None,
        include_defaults=include_defaults,
    )


def load_tasks(names: list[str], include_path: Path | None, include_defaults: bool) -> dict[str, Any]:
    """name -> lm-eval ``Task`` object (its data set loaded from the local JSONL / user cache)."""
    from lm_eval.tasks import get_task_dict

    from bench.errors import DatasetMissing

    tm = task_manager(include_path, include_defaults)
    try:
        td = get_task_dict(names, tm)
    except Exception as e:  # datasets raise ConnectionError / FileNotFoundError when offline & uncached
        raise DatasetMissing(
            f"lm-eval task(s) {names} could not be loaded offline ({type(e).__name__}: {e}). "
            "Standard tasks need the data sets in your Hugging Face cache (set HF_HOME to it)."
        ) from None
    return {k if isinstance(k, str) else getattr(k, "group_name", str(k)): v for k, v in td.items()}


def task_pairs(task, split: str, limit: int | None = None) -> list[tuple[str, str]]:
    """(context, continuation) pairs of a split of an lm-eval task, in lm-eval's own format.

    ``multiple_choice``: continuation = target_delimiter + gold choice; ``generate_until``:
    target_delimiter + target string. Zero-shot (no few-shot context).
    """
    docs = {
        "train": task.training_docs if task.has_training_docs() else None,
        "validation": task.validation_docs if task.has_validation_docs() else None,
        "test": task.test_docs if task.has_test_docs() else None,
    }[split]
    if docs is None:
        return []
    cfg = task.config
    delim = cfg.target_delimiter if cfg.target_delimiter is not None else " "
    out = []
    for i, doc in enumerate(docs()):
        if limit is not None and i >= limit:
            break
        ctx = task.doc_to_text(doc)
        tgt = task.doc_to_target(doc)
        if cfg.output_type == "multiple_choice":
            choices = task.doc_to_choice(doc)
            if isinstance(tgt, list):
                tgt = tgt[0]
            tgt = choices[tgt] if isinstance(tgt, int) else str(tgt)
        elif isinstance(tgt, list):
            tgt = tgt[0]
        out.append((str(ctx), delim + str(tgt)))
    return out


# -- the data set object ---------------------------------------------------------------------------
@dataclass
class TextSplit:
    """(context, continuation) pairs of one split; ``limit`` caps evaluation (``n_test``)."""

    pairs: list[tuple[str, str]]
    limit: int | None = None

    def __len__(self) -> int:
        return len(self.pairs)

    def head(self, n: int | None) -> "TextSplit":
        if n is None:
            return self
        return TextSplit(self.pairs[:n], limit=n)


@dataclass
class TextTasks:
    """What the ``peft_tasks`` data set loader returns (``ctx.dataset``).

    ``tasks``: lm-eval task names; ``include_path``: directory of task YAMLs (or None);
    ``include_defaults``: whether lm-eval's built-in tasks are indexed (standard tasks, 8B);
    ``train`` / ``validation`` / ``test``: pooled (context, continuation) pairs over all tasks,
    interleaved task by task, for training and calibration (test only sizes evaluation).
    """

    name: str
    tasks: list[str]
    include_path: Path | None
    include_defaults: bool
    train: TextSplit
    validation: TextSplit
    test: TextSplit
    source: str
    fingerprint: str
    per_task_train: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, str] = field(default_factory=dict)  # task -> lm-eval metric key

    def ensure_loaded(self) -> None:
        """Generated tasks are read at load time; :class:`bench.data.text_tasks.LazyTextTasks` overrides."""

    def describe(self) -> dict:
        return {
            "dataset": self.name,
            "dataset_source": self.source,
            "tasks": ",".join(self.tasks),
            "n_train": len(self.train),
            "n_validation": len(self.validation),
            "n_test": len(self.test),
        }


def _interleave(lists: list[list]) -> list:
    out = []
    for i in range(max((len(x) for x in lists), default=0)):
        for x in lists:
            if i < len(x):
                out.append(x[i])
    return out


def build_text_tasks(
    tasks: list[str],
    include_path: Path | None,
    include_defaults: bool,
    source: str,
    n_train: int | None = None,
    n_validation: int | None = None,
) -> TextTasks:
    """Load the lm-eval tasks and extract their pairs; validation falls back to the train tail."""
    objs = load_tasks(tasks, include_path, include_defaults)
    tr, va, te = [], [], []
    for name in tasks:
        t = objs[name]
        a = task_pairs(t, "train", n_train)
        b = task_pairs(t, "validation", n_validation)
        c = task_pairs(t, "test")
        if not b and len(a) > 20:  # no validation split: hold out the train tail
            k = max(10, len(a) // 10)
            a, b = a[:-k], a[-k:]
        tr.append(a)
        va.append(b)
        te.append(c)
    train, val, test = _interleave(tr), _interleave(va), _interleave(te)
    fp = stable_hash({"tasks": tasks, "train": train, "val": val, "test": test})
    return TextTasks(
        name="peft_tasks",
        tasks=list(tasks),
        include_path=include_path,
        include_defaults=include_defaults,
        train=TextSplit(train),
        validation=TextSplit(val),
        test=TextSplit(test),
        source=source,
        fingerprint=fp,
        per_task_train={n: len(a) for n, a in zip(tasks, tr)},
    )
