#!/usr/bin/env bash
# The GPU figures of the model/sampler issue, as one prepared run (a few minutes on an H100/H200).
#
#   bash scripts/gpu_bench.sh                 # on the GPU machine, from the repository root
#   CONFIG=tiny DTYPE=float32 bash scripts/gpu_bench.sh   # a quick smoke run of the same steps
#
# Runs, with rljax from this checkout (PYTHONPATH) and the machine's own jax/flax/optax/torch/
# transformers:
#   1. the train step (forward + backward + AdamW) of the Qwen2-0.5B shape in bfloat16 against
#      PyTorch + transformers on the same GPU; MFU against PEAK_TFLOPS (the card's dense bf16
#      datasheet peak, 989 for the H100 SXM and the H200), unless PEAK_TFLOPS is empty, when the
#      script measures a matmul peak instead;
#   2. sampling tokens/s of the same shape against Hugging Face `generate` on the same GPU.
# TRAIN_ARGS adds flags to the train-step script (e.g. --no-compile to skip torch.compile).
# Every log is also written under $OUT (default /tmp/gpu_bench). Both scripts keep JAX from
# preallocating GPU memory, so that PyTorch, timed in the same process, can allocate too.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_bench}
CONFIG=${CONFIG:-qwen2_0_5b}
DTYPE=${DTYPE:-bfloat16}
PEAK_TFLOPS=${PEAK_TFLOPS-989}
TRAIN_BATCH=${TRAIN_BATCH:-8}
TRAIN_SEQ=${TRAIN_SEQ:-1024}
SAMPLE_BATCHES=${SAMPLE_BATCHES:-16,64}
PY=${PY:-python3}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null \
    || echo "nvidia-smi: not available"
  "$PY" -c 'import sys, jax, flax, optax, torch, transformers
print("python", sys.version.split()[0], "| jax", jax.__version__, jax.devices(), "| flax",
      flax.__version__, "| optax", optax.__version__, "| torch", torch.__version__,
      "cuda" if torch.cuda.is_available() else "no cuda", "| transformers",
      transformers.__version__)'
} 2>&1 | tee "$OUT/env.txt"

peak=()
[[ -n "$PEAK_TFLOPS" ]] && peak=(--peak-tflops "$PEAK_TFLOPS")
status=0
timeout "${TRAIN_TIMEOUT:-300}" "$PY" benchmarks/train_step.py --config "$CONFIG" \
  --dtype "$DTYPE" --batch "$TRAIN_BATCH" --seq "$TRAIN_SEQ" --steps 5 --rounds 3 "${peak[@]}" \
  ${TRAIN_ARGS:-} \
  2>&1 | tee "$OUT/train_step.txt" || status=1
timeout "${SAMPLE_TIMEOUT:-240}" "$PY" benchmarks/sampler.py --config "$CONFIG" --dtype "$DTYPE" \
  --batch_sizes "$SAMPLE_BATCHES" --skip_naive 2>&1 | tee "$OUT/sampler.txt" || status=1
echo "logs in $OUT; exit status $status"
exit $status
