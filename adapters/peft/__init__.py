"""The PEFT family: parameter-efficient fine-tuning of a frozen causal LM (Qwen3), compared on cost
(params, bytes, s/step, memory, FLOPs) vs lm-eval accuracy. Adapters: ``lora``
(:mod:`.lora`, LoRA on all layers, the baseline), ``layer_card`` (:mod:`.layer_card`, LoRA on the
layers the Layer Card selects), ``prefix_tuning`` (:mod:`.prefix_tuning`) and ``prefix_tuning_plus``
(:mod:`.prefix_tuning_plus`). Shared, non-adapter pieces every arm uses:

* :mod:`adapters.peft.qwen3_tiny`   -- a small ``Qwen3Config`` model pre-trained briefly here on local text
* :mod:`adapters.peft.base_models`  -- ``load_base_model``: ``qwen3-tiny`` (cached) or ``qwen3-8b`` (user path)
* :mod:`adapters.peft.tasks`        -- deterministic generated tasks (JSONL) and lm-eval task YAMLs
* :mod:`adapters.peft.train`        -- the one training loop every arm uses
* :mod:`adapters.peft.cost`         -- the cost record (params, bytes, s/step, memory, FLOPs)
* :mod:`adapters.peft.evaluate`     -- accuracy through lm-eval's ``HFLM`` over the adapted model object
* :mod:`adapters.peft.layer_scores` -- the Layer Card diagnostic (resnorm, activation energy, coupling, cost)
* :mod:`adapters.peft.prefix_plus`  -- the Prefix-Tuning+ module (trainable memory read by phi(q))
* :mod:`adapters.peft.adapter_base` -- ``PeftAdapter``, the base class of the four arms
* :mod:`adapters.peft.pareto`       -- cost-vs-accuracy Pareto front and figures for the leaderboard
* ``lm_eval_tasks/``                -- lm-eval task YAMLs for the generated tasks (data, not a package)
"""
