# The two commands: `make bench` (default suite: fmnist) and `make test`.
PY      := .venv/bin/python
SUITE   ?= fmnist
SEEDS   ?=
METHODS ?=
export MLFLOW_DISABLE_TELEMETRY := true
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install bench test leaderboard ui mlflow-server

install: .venv/.installed

.venv/.installed: scripts/install.sh constraints.txt requirements.txt pyproject.toml
	bash scripts/install.sh

# The local executor's worker pool (WORKERS=1: one cell after another in one process).
# LIMIT=N: a quick check, not a result: every image, sample and step count capped at N (suite <name>.limit<N>).
WORKERS ?=
LIMIT   ?=
bench: install
	$(PY) -m bench.cli run $(SUITE) $(if $(WORKERS),--workers $(WORKERS)) $(if $(SEEDS),--seeds $(SEEDS)) $(if $(METHODS),--methods $(METHODS)) $(if $(LIMIT),--limit $(LIMIT))

test: install
	$(PY) -m pytest

leaderboard: install
	$(PY) -m bench.cli leaderboard $(SUITE)

ui: install
	$(PY) -m bench.cli ui

# A tracking server for many writers (docs/running/cluster.md): PostgreSQL + mlflow server on 127.0.0.1.
# PORT / PG_PORT: the MLflow server's and PostgreSQL's ports [default: 5001 / 5433].
PORT    ?=
PG_PORT ?=
mlflow-server: install
	$(PY) -m bench.cli server $(if $(PORT),--port $(PORT)) $(if $(PG_PORT),--pg-port $(PG_PORT))

# Regression gate (docs/ci-gate.md): run suites/$(CI_SUITE).yaml from fresh weights in its own store
# (results/gate/$(CI_SUITE)/), compare with the committed baseline; exit 1 on a regression, 2 if refused.
# CI_GATE_ARGS=--reuse reuses finished cells and cached weights (fast, but blind to training-code changes).
CI_SUITE     ?= ci
CI_BASELINE  ?= results/baselines/$(CI_SUITE).json
CI_GATE_ARGS ?=
# The gate's pinned float setting (docs/ci-gate.md): one thread, and torch's, MKL's and oneDNN's CPU
# code paths capped at AVX2, so Intel AVX-512 and AMD AVX2 machines take the same kernels.
CI_NUMERICS  ?= OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 ATEN_CPU_CAPABILITY=avx2 MKL_CBWR=AVX2 ONEDNN_MAX_CPU_ISA=AVX2
.PHONY: ci-gate ci-baseline ci-noise
ci-gate: install
	$(CI_NUMERICS) $(PY) -m bench.cli gate $(CI_SUITE) --baseline $(CI_BASELINE) --no-progress $(CI_GATE_ARGS)

# Write the baseline the gate compares with (then review and commit $(CI_BASELINE)).
ci-baseline: install
	$(CI_NUMERICS) $(PY) -m bench.cli gate $(CI_SUITE) --baseline $(CI_BASELINE) --write-baseline --no-progress

# Re-measure the gate's paired noise (three gate runs; slow: the generic SSE float64 kernels): the suite under three float settings,
# then results/baselines/$(CI_SUITE).noise.json and a baseline from the reference run.
ci-noise: install
	CI_NUMERICS="$(CI_NUMERICS)" bash scripts/gate_noise.sh $(CI_SUITE)
