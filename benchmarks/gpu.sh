#!/usr/bin/env bash
# One prepared GPU benchmark run (H100 80GB / H200): vit_jax vs vit_torch, bf16, 224²,
# train and infer, B/16 and Ti/16, cuDNN flash vs XLA attention. ~5–8 min wall, compiles
# included; every run has its own time limit so one hang cannot eat the rest.
#
# Exact invocation:
#   here, once:     bash benchmarks/fetch_gpu_wheels.sh  (ml-collections → benchmarks/.whl)
#   device tool:    run(command="bash benchmarks/gpu.sh", carry=["benchmarks/.whl"],
#                       timeout_s=580)
#   elsewhere:      OUT=/tmp/vit_gpu bash benchmarks/gpu.sh
# Results: $OUT/gpu_<variant>_<attention>.json (one per run), $OUT/memory_B16.json (XLA's
# memory analysis per remat policy, python -m benchmarks.memory), $OUT/gpu_table.md (the
# combined table, also printed), $OUT/gpu_log.txt (everything printed).
# Knobs (environment): PEAK_TFLOPS (MFU denominator; default: a bf16 8192³ matmul measured
# in each run), B16_BATCH (default 256), TI16_BATCH (default 256), STEPS (default 5),
# ALLOW_CPU=1 (smoke-test the script on a CPU machine, with tiny batches).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/vit_gpu_bench}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_log.txt") 2>&1
PY=${PY:-python3}
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false TF_CPP_MIN_LOG_LEVEL=2
T0=$SECONDS
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

# --- 1. Packages. The image has jax with the CUDA plugin; if jax does not see the GPU,
# install carried CUDA wheels of jax (jax, jaxlib, jax-cuda*-plugin, jax-cuda*-pjrt must
# be put into benchmarks/.whl by hand: they are ~200 MB+, over the 64 MiB carry limit, so
# only a matching plugin for the installed jaxlib is realistic).
if [ -d benchmarks/.whl ] && ls benchmarks/.whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/vit_bench_site benchmarks/.whl/*.whl || { echo "wheel install failed"; exit 1; }
  export PYTHONPATH=/tmp/vit_bench_site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
backend=$($PY -c "import jax; print(jax.default_backend())" 2>/dev/null | tail -1)
echo "jax backend: $backend"
if [ "$backend" != "gpu" ] && [ -z "${ALLOW_CPU:-}" ]; then
  echo "jax does not see a GPU. Carry jax-cuda13-plugin/pjrt wheels matching" \
       "'$($PY -c 'import jaxlib; print(jaxlib.__version__)' 2>/dev/null)' in benchmarks/.whl."
  exit 1
fi
$PY -c "import jax, flax, torch, vit_jax.train, vit_torch; print('jax', jax.__version__, \
'flax', flax.__version__, 'torch', torch.__version__, 'cuda', torch.cuda.is_available())" || exit 1

# --- 2. Runs. run NAME LIMIT_S BATCH ARGS...: on out-of-memory, retries at half the batch.
run() {
  local name=$1 limit=$2 batch=$3
  shift 3
  local json="$OUT/gpu_${name}.json" log="$OUT/.run_${name}.log"
  for attempt in 1 2; do
    echo; echo "=== $name batch $batch ($((SECONDS - T0)) s elapsed)"
    timeout -k 10 "$limit" $PY -m benchmarks.speed --dtype bfloat16 --image-size 224 \
      --mode both --batch-size "$batch" --steps "${STEPS:-5}" --warmup 2 --repeats 3 \
      ${PEAK_TFLOPS:+--peak-tflops $PEAK_TFLOPS} --json "$json" "$@" 2>&1 | tee "$log"
    local rc=${PIPESTATUS[0]}
    [ "$rc" = 0 ] && return 0
    if [ "$attempt" = 1 ] && grep -qiE "RESOURCE_EXHAUSTED|out of memory|OutOfMemory" "$log"; then
      batch=$((batch / 2)); echo "OOM: retrying $name at batch $batch"
    else
      echo "run $name failed (exit $rc)"; return 1
    fi
  done
}

B16=${B16_BATCH:-256}
TI16=${TI16_BATCH:-256}
# --scan everywhere: one compiled block, so each compile stays well under a minute (the
# unrolled Ti/16 cuDNN run of 2026-11-26 ran out of its 80 s in compilation).
# cudnn pads the 197 tokens to 208 under a length mask (vit_jax/model/attention.py): JAX's
# cuDNN path refuses odd sequence lengths in training.
# PyTorch (default SDPA: flash on Hopper) runs once per variant: in the cuDNN run, or in
# the XLA run if the cuDNN one failed.
fw=jax
run B16_cudnn 170 "$B16" --variant B/16 --scan --attention cudnn --frameworks jax,torch \
  || fw=jax,torch
run B16_xla 110 "$B16" --variant B/16 --scan --attention xla --frameworks $fw
fw=jax
run Ti16_cudnn 120 "$TI16" --variant Ti/16 --scan --attention cudnn --frameworks jax,torch \
  || fw=jax,torch
run Ti16_xla 90 "$TI16" --variant Ti/16 --scan --attention xla --frameworks $fw

# --- 3. Memory without running (XLA's buffer assignment of the compiled step on this GPU,
# JAX's residuals, the twin's saved tensors) for the remat policies, unrolled and scanned.
echo; echo "=== memory ($((SECONDS - T0)) s elapsed)"
timeout -k 10 150 $PY -m benchmarks.memory --variant B/16 --batch-size "$B16" \
  --dtype bfloat16 --scan false,true --remat-policy default,dots,none \
  --json "$OUT/memory_B16.json" || echo "memory run failed"

# --- 4. One table.
echo; echo "=== summary ($((SECONDS - T0)) s elapsed)"
$PY benchmarks/summarize.py "$OUT"/gpu_*.json | tee "$OUT/gpu_table.md"
