#!/usr/bin/env bash
# Measure the regression gate's paired cross-machine noise (docs/ci-gate.md), as `make ci-noise` does.
# Runs suites/$SUITE.yaml three times from fresh weights, each under another floating-point setting that a
# machine of this kind may have, two at a time (one thread each), then:
#   results/baselines/$SUITE.noise.json  per-metric RMS of the paired (same seed) differences vs the reference
#   results/baselines/$SUITE.json        the baseline, from the reference run (the gate's own pinned setting)
set -euo pipefail
cd "$(dirname "$0")/.."
SUITE=${1:-ci}
PY=.venv/bin/python
W=results/gate/noise/$SUITE
: "${CI_NUMERICS:=OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 ATEN_CPU_CAPABILITY=avx2 MKL_CBWR=AVX2 ONEDNN_MAX_CPU_ISA=AVX2}"
declare -A SETTING=(
  [ref]="$CI_NUMERICS"
  [native]="OMP_NUM_THREADS=1 MKL_NUM_THREADS=1"   # whatever this CPU picks (AVX-512 on an Intel Xeon)
  [generic]="OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 ATEN_CPU_CAPABILITY=default MKL_CBWR=COMPATIBLE ONEDNN_MAX_CPU_ISA=SSE41"
)
rm -rf "$W"; mkdir -p "$W"
run() { env ${SETTING[$1]} $PY -m bench.cli gate "$SUITE" --workdir "$W/$1" --run-only --no-progress \
          > "$W/$1.log" 2>&1 && echo "$1: done" || { echo "$1: FAILED (see $W/$1.log)"; return 1; }; }
run ref & a=$!; run native & b=$!; wait $a; wait $b
run generic
$PY -m bench.cli gate-noise "$SUITE" --reference "$W/ref" --variant "$W/native" --variant "$W/generic" \
    --output "results/baselines/$SUITE.noise.json"
$PY -m bench.cli baseline "$SUITE" --tracking-uri "sqlite:///$PWD/$W/ref/mlflow.db" --output "results/baselines/$SUITE.json"
