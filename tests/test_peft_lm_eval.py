"""lm-eval on a two-question local task returns 0.5 for a model rigged to answer "yes" always."""
from __future__ import annotations

import json


from peft_helpers import tiny_base

YAML = """task: two_questions
dataset_path: json
dataset_kwargs:
  data_files:
    test: "{path}"
output_type: multiple_choice
test_split: test
doc_to_text: text
doc_to_choice: choices
doc_to_target: label
target_delimiter: " "
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


def test_two_question_task_rigged_model(tmp_path):
    from adapters.peft.evaluate import lm_eval_accuracy

    data = tmp_path / "two.jsonl"
    docs = [{"text": "Pair: cat dog\nSame kind:", "choices": ["no", "yes"], "label": 1},
            {"text": "Pair: cat rain\nSame kind:", "choices": ["no", "yes"], "label": 0}]
    data.write_text("".join(json.dumps(d) + "\n" for d in docs))
    inc = tmp_path / "tasks"
    inc.mkdir()
    (inc / "two.yaml").write_text(YAML.format(path=data))

    base = tiny_base(layers=1)
    tok = base.tokenizer
    yes = tok(" yes", add_special_tokens=False)["input_ids"]
    no = tok(" no", add_special_tokens=False)["input_ids"]
    assert yes[0] not in no
    model = base.model

    def rig(module, args, out):  # every position prefers the tokens of " yes"
        out.logits[..., yes] += 50.0
        return out

    h = model.register_forward_hook(rig)
    try:
        res = lm_eval_accuracy(model, tok, ["two_questions"], inc, False, batch_size=2)
    finally:
        h.remove()
    r = res["two_questions"]
    assert r["metric"].startswith("acc")
    assert r["value"] == 0.5
    assert r["n"] in (None, 2)
    assert abs(r["stderr"] - 0.5) < 1e-9  # sample std of [1, 0] / sqrt(2)
