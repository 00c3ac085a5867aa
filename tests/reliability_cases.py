"""Malformed suites that `bench validate` must refuse (exit 2, the field named), beyond tests/test_bad_inputs.py.

Shared by tests/test_reliability.py and scripts/bad_inputs_corpus.py: (id, suite text, expected
substring of the message). Each would otherwise fail at run time (some after training), be
silently accepted, or write outside the results directory.
"""
from __future__ import annotations

from test_bad_inputs import BASE, sub

FEWSTEP = """\
name: f
dataset: {name: fmnist}
seeds: [0]
methods:
  - {name: teacher, adapter: teacher}
  - {name: tdm, adapter: tdm, baseline: true}
budget: {teacher_steps: 1, tdm_steps: 1}
metrics:
  - {name: reward_nfe, params: {reward: judge, n: 10, steps: [1, 2], method_steps: {teacher: [1, 4]}}}
"""

LLM = """\
name: l
dataset: {name: llm_text}
seeds: [0]
budget: {steps: 1}
methods:
  - {name: base, adapter: llama_baseline, baseline: true, params: {arch: {layers: 2}}}
metrics:
  - {name: llm_internals, params: {seq: 64, k: 10, amp_layer: 0}}
"""

PEFT = """\
name: p
base_model: {name: qwen3-tiny, layers: 2}
dataset: {name: peft_tasks, params: {tasks: [peft_topic, peft_last_word]}}
seeds: [0]
budget: {steps: 1}
methods:
  - {name: lora, adapter: lora, baseline: true}
metrics:
  - {name: lm_accuracy}
"""

GATE = BASE + "gate: {tolerance: {k: 3.5, rel: 0.02}}\n"


def fsub(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


CLAIM = "claims:\n  - {{name: c, paper: p, assert: {a!r}{extra}}}\n"


def claim(assertion: str, extra: str = "") -> str:
    return BASE + CLAIM.format(a=assertion, extra=extra)


LONG = "m" * 300

SUITES: list[tuple[str, str, str]] = [
    # names are not paths
    ("suite-name-dotdot", sub("name: t\n", "name: '..'\n"), "name"),
    ("suite-name-dot", sub("name: t\n", "name: '.'\n"), "name"),
    ("suite-name-slash", sub("name: t\n", "name: a/b\n"), "name"),
    ("suite-name-backslash", sub("name: t\n", "name: 'a\\\\b'\n"), "name"),
    ("suite-name-leading-dot", sub("name: t\n", "name: .hidden\n"), "name"),
    ("suite-name-leading-dash", sub("name: t\n", "name: -rf\n"), "name"),
    ("suite-name-300", sub("name: t\n", f"name: {LONG}\n"), "at most 100"),
    ("suite-name-101", sub("name: t\n", f"name: {'s' * 101}\n"), "at most 100"),
    ("suite-name-space", sub("name: t\n", "name: 'a b'\n"), "name"),
    ("suite-name-nul", sub("name: t\n", "name: \"a\\0b\"\n"), "name"),
    ("suite-name-unicode", sub("name: t\n", "name: ä\n"), "name"),
    ("suite-name-number", sub("name: t\n", "name: 12\n"), "name"),
    ("suite-name-limit-suffix", sub("name: t\n", "name: t.limit5\n"), "reserved"),
    ("method-name-dotdot", sub("{name: vcq, adapter", "{name: '..', adapter"), "methods[1].name"),
    ("method-name-slash", sub("{name: vcq, adapter", "{name: ../../x, adapter"), "methods[1].name"),
    ("method-name-300", sub("{name: vcq, adapter", f"{{name: {LONG}, adapter"), "methods[1].name"),
    ("method-name-empty", sub("{name: vcq, adapter", "{name: '', adapter"), "methods[1].name"),
    ("method-name-dot", sub("{name: vcq, adapter", "{name: '.', adapter"), "methods[1].name"),
    ("noise-file-traversal", GATE.replace("gate: {", "gate: {noise_file: ../../../../etc/shadow, "), "gate.noise_file"),
    ("noise-file-absolute", GATE.replace("gate: {", "gate: {noise_file: /etc/passwd, "), "gate.noise_file"),
    ("noise-file-missing", GATE.replace("gate: {", "gate: {noise_file: results/baselines/nope.noise.json, "),
     "gate.noise_file"),
    ("noise-file-not-json", GATE.replace("gate: {", "gate: {noise_file: README.md, "), "gate.noise_file"),
    ("seed-noise-traversal", BASE + "seed_noise: ../../tmp/x.json\n", "seed_noise"),
    ("seed-noise-absolute-not-json", BASE + "seed_noise: /tmp/x.txt\n", "seed_noise"),
    # what validate accepts, run can run
    ("tokenizer-width-heads", sub("{codebook_size: 16}", "{codebook_size: 16, tokenizer: {width: 33, heads: 2}}"),
     "methods[0].params.tokenizer"),
    ("prior-width-heads", sub("{codebook_size: 16}", "{codebook_size: 16, prior: {width: 30, heads: 4}}"),
     "methods[0].params.prior"),
    ("llm-heads-kv", fsub(LLM, "{layers: 2}", "{layers: 2, heads: 3, kv_heads: 2}"), "methods[0].params.arch"),
    ("llm-k-over-seq", fsub(LLM, "k: 10", "k: 1000"), "metrics[0].params"),
    ("llm-amp-layer", fsub(LLM, "amp_layer: 0", "amp_layer: 99"), "metrics[0].params.amp_layer"),
    ("llm-amp-layer-2", fsub(LLM, "amp_layer: 0", "amp_layer: 2"), "metrics[0].params.amp_layer"),
    ("nfe-huge", fsub(FEWSTEP, "steps: [1, 2]", "steps: [1, 1000000000]"), "metrics[0].params.steps"),
    ("nfe-huge-method-steps", fsub(FEWSTEP, "teacher: [1, 4]", "teacher: [1, 40000]"), "metrics[0].params.method_steps"),
    ("method-steps-typo", fsub(FEWSTEP, "teacher: [1, 4]", "teacher_: [1, 4]"), "method_steps.teacher_"),
    ("sweep-nfe-huge", sub("gfid, params: {n: 10}", "gfid, params: {n: 10, steps: [1, 100000]}"), "metrics[3].params.steps"),
    ("lm-accuracy-unknown-task", fsub(PEFT, "{name: lm_accuracy}", "{name: lm_accuracy, params: {tasks: [peft_topik]}}"),
     "metrics[0].params.tasks"),
    ("lm-accuracy-other-task", fsub(PEFT, "{name: lm_accuracy}", "{name: lm_accuracy, params: {tasks: [hellaswag]}}"),
     "metrics[0].params.tasks"),
    ("lm-accuracy-empty-tasks", fsub(PEFT, "{name: lm_accuracy}", "{name: lm_accuracy, params: {tasks: []}}"),
     "metrics[0].params.tasks"),
    ("dataset-unknown-generated", fsub(PEFT, "[peft_topic, peft_last_word]", "[peft_topic, peft_nope]"),
     "dataset.params.tasks"),
    ("dataset-size-negative", fsub(PEFT, "peft_last_word]}", "peft_last_word], sizes: {train: -5}}"),
     "dataset.params.sizes.train"),
    ("dataset-size-zero", fsub(PEFT, "peft_last_word]}", "peft_last_word], sizes: {test: 0}}"),
     "dataset.params.sizes.test"),
    ("dataset-size-unknown-split", fsub(PEFT, "peft_last_word]}", "peft_last_word], sizes: {tran: 5}}"),
     "dataset.params.sizes"),
    ("base-model-layers", fsub(PEFT, "layers: 2}", "layers: -1}"), "base_model.layers"),
    ("base-model-unknown-key", fsub(PEFT, "layers: 2}", "layers: 2, colour: red}"), "base_model.colour"),
    ("base-model-unknown-name", fsub(PEFT, "{name: qwen3-tiny, layers: 2}", "{name: gpt5}"), "base_model.name"),
    ("base-model-string-int", fsub(PEFT, "layers: 2}", "layers: '2'}"), "base_model.layers"),
    ("base-model-heads", fsub(PEFT, "layers: 2}", "layers: 2, heads: 3, kv_heads: 2}"), "base_model"),
    ("budget-over-data", fsub(fsub(PEFT, "peft_last_word]}", "peft_last_word], sizes: {train: 4}}"),
                             "{steps: 1}", "{steps: 1, batch_size: 64}"), "budget.batch_size"),
    ("gate-unknown-key", GATE.replace("gate: {", "gate: {colour: red, "), "gate.colour"),
    ("gate-unknown-metric", GATE.replace("gate: {", "gate: {metrics: {fid: {k: 2}}, "), "gate.metrics.fid"),
    ("gate-unknown-exclude", GATE.replace("gate: {", "gate: {exclude: [fid], "), "gate.exclude[0]"),
    ("gate-negative-k", GATE.replace("k: 3.5", "k: -1"), "gate.tolerance.k"),
    ("probe-duplicate-ks", sub("{ks: [1, 2]}", "{ks: [1, 2, 2]}"), "metrics[1].params.ks"),
    ("probe-duplicate-all", sub("{ks: [1, 2]}", "{ks: [1, all, all]}"), "metrics[1].params.ks"),
    ("claim-tol-negative", claim("ar_loss(vq) < ar_loss(vcq) + tol", ", tol: -1.0"), "claims[0].tol"),
    ("claim-div-folded-zero", claim("ar_loss(vq) / (1 - 1) < ar_loss(vcq)"), "division by zero"),
    ("claim-div-tol-folded-zero", claim("ar_loss(vq) / (tol - 0.5) < ar_loss(vcq)", ", tol: 0.5"), "division by zero"),
    ("claim-div-nested-zero", claim("ar_loss(vq) < ar_loss(vcq) / (2 * (3 - 3))"), "division by zero"),
    ("claim-div-tol-product", claim("ar_loss(vq) < ar_loss(vcq) / (tol * 0)", ", tol: 0.3"), "division by zero"),
    ("executor-workers-huge", BASE + "executor: {workers: 100000}\n", "executor.workers"),
]
