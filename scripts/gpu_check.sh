#!/usr/bin/env bash
# A short check of the GPU paths on a CUDA machine (about 8 min on one GPU; not run on the CPU machine):
#   1. imagenet256 --limit 4 (vq) on synthetic 256x256 stand-ins,
#   2. peft_qwen3_8b --limit 4 (lora_all) with the tiny stand-in Qwen3 checkpoint in bfloat16 on cuda,
#   3. one limited imagenet256 cell through `bench run-cell` under torchrun --nproc_per_node 1 (NCCL),
#   4. Inception feature throughput and AR sampling throughput (the imagenet256 prior's size),
# then prints one table. Usage: bash scripts/gpu_check.sh [WORKDIR]   (default: a new temp dir)
# Exits 2 with a message when no CUDA device is visible. Stand-ins: scripts/make_standins.py (docs/standins.md).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || { echo "gpu_check: $PY not found: run 'make install' first (or set PY)" >&2; exit 2; }
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "gpu_check: no CUDA device visible (torch.cuda.is_available() is False): run it on a GPU machine" >&2
  exit 2
fi
W=${1:-$(mktemp -d /tmp/gpu_check.XXXXXX)}
mkdir -p "$W"
export MLFLOW_DISABLE_TELEMETRY=true HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HOME="$W/hf"
URI="sqlite:///$W/mlflow.db"
T=$W/table.txt
: > "$T"
row() { printf '%-46s %-8s %s\n' "$1" "$2" "$3" | tee -a "$T"; }

echo "[gpu_check] stand-ins in $W/standins (256x256 JPEGs)"
eval "$("$PY" scripts/make_standins.py "$W/standins" --image-size 256 2>/dev/null | grep '^export ')"

run() {  # run NAME CMD...: time one step, record ok/FAILED and the seconds
  local name=$1; shift
  local t0=$SECONDS
  if "$@" > "$W/$name.log" 2>&1; then row "$name" ok "$((SECONDS - t0)) s"; else row "$name" FAILED "$((SECONDS - t0)) s, see $W/$name.log"; fi
}
run "imagenet256 --limit 4 (vq), cuda" "$PY" -m bench.cli --results-dir "$W/results" run suites/imagenet256.yaml \
    --limit 4 --methods vq --workers 1 --no-progress --tracking-uri "$URI"
run "peft_qwen3_8b --limit 4 (lora_all), bf16" "$PY" -m bench.cli --results-dir "$W/results" run "$STANDIN_PEFT_SUITE" \
    --limit 4 --methods lora_all --seeds 0 --workers 1 --no-progress --tracking-uri "$URI"
"$PY" -c "from bench.plan import resolve; print(*resolve('suites/imagenet256.yaml', ['vcq'], [0], limit=4).write('$W/cells'))" \
    > "$W/cells.txt"
run "run-cell under torchrun (1 proc, NCCL)" "$PY" -m torch.distributed.run --nproc_per_node 1 -m bench.cli \
    run-cell "$(cat "$W/cells.txt")" --tracking-uri "$URI" --no-progress

"$PY" - "$T" <<'EOF' 2>"$W/throughput.log" || row "throughput" FAILED "see $W/throughput.log"
import sys, time, torch
from bench.metrics.inception import inception_features
from adapters.tokenizers.ar_prior import ARPrior
from adapters.tokenizers.params import PriorConfig

def row(name, value):
    line = f"{name:<46} {'ok':<8} {value}"
    print(line); open(sys.argv[1], "a").write(line + "\n")

imgs = torch.randint(0, 256, (512, 3, 256, 256), dtype=torch.uint8)
inception_features(imgs[:64], batch_size=64, progress=False, device="cuda")  # warm-up (weights, kernels)
torch.cuda.synchronize(); t = time.perf_counter()
inception_features(imgs, batch_size=128, progress=False, device="cuda")
torch.cuda.synchronize()
row("Inception features (256->299, batch 128)", f"{len(imgs) / (time.perf_counter() - t):.0f} images/s")

prior = ARPrior(16384, 256, 1000, PriorConfig(width=768, layers=12, heads=12, mlp_ratio=4.0)).cuda()
labels = torch.arange(64) % 1000
prior.sample(labels[:8], seed=0, batch_size=8)  # warm-up
torch.cuda.synchronize(); t = time.perf_counter()
prior.sample(labels, seed=0, batch_size=64)
torch.cuda.synchronize()
row("AR sampling (imagenet256 prior, 256 tokens, fp32)", f"{len(labels) / (time.perf_counter() - t):.1f} sequences/s")
EOF

echo
echo "gpu_check on $("$PY" -c 'import torch; print(torch.cuda.get_device_name(0))') (workdir $W)"
printf '%-46s %-8s %s\n' step status value
cat "$T"
! grep -q FAILED "$T"
