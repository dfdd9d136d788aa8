#!/usr/bin/env bash
# Every GPU figure of the training step and the generator forward, in one run of about
# 7 minutes on one H100/H200 (each compile included: ~100 s for the bf16 step at batch 128).
#
# Here, once: benchmarks/fetch_device_wheels.sh (the pure-Python packages the device image
# lacks, into .whl/, which git ignores). On the device machine, from the repository root,
# with .whl carried along:  bash benchmarks/gpu_session.sh
# Results: one JSON line per benchmark in $OUT (default /tmp/nirgan-gpu), the XLA dump of the
# batch-128 step as xla_b128.tgz, profiler traces as traces.tgz.
set -uo pipefail
out=${OUT:-/tmp/nirgan-gpu}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit 1
export PYTHONUNBUFFERED=1
# Later runs of the same step (the profiles) reuse the compiled programs.
export JAX_COMPILATION_CACHE_DIR=/tmp/nirgan-jax-cache JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"

bench() {  # name, timeout seconds, command...
  local name=$1 limit=$2
  shift 2
  echo "== $name"
  timeout "$limit" "$@" 2>"$out/$name.log" | tee "$out/$name.json"
}

# 1. The bf16 step as the batch grows (issue: 535 img/s at 64, 166 at 128).
bench train_bf16 240 python3 -m benchmarks.train_step --sizes full --batch 16 32 64 \
  --dtype bfloat16 --repeats 5
XLA_FLAGS="--xla_dump_to=/tmp/xla_b128 --xla_dump_hlo_as_text --xla_dump_hlo_pass_re=^$" \
  bench train_bf16_b128 200 python3 -m benchmarks.train_step --sizes full --batch 128 \
  --dtype bfloat16 --repeats 5
tar czf "$out/xla_b128.tgz" -C /tmp xla_b128 2>/dev/null
# 2. fp32 against the original-style PyTorch iteration (fp32, and bf16 autocast +
#    channels_last) on the same GPU.
bench train_fp32_torch 150 python3 -m benchmarks.train_step --sizes full --batch 32 \
  --dtype float32 bfloat16 --torch --torch_dtype float32 bfloat16 --repeats 5
# 3. Where the time goes at the best batch and at the cliff.
for batch in 64 128; do
  bench "profile_b$batch" 150 python3 -m benchmarks.profile_step --batch "$batch" \
    --dtype bfloat16 --trace_dir "/tmp/traces/b$batch"
done
tar czf "$out/traces.tgz" -C /tmp traces 2>/dev/null
# 4. Inference: the generator forward in bf16 beside PyTorch.
bench forward 150 python3 -m benchmarks.generator_forward --sizes full --batch 64 256 \
  --dtype bfloat16 float32 --torch --torch_dtype float32 bfloat16 --repeats 5
ls -la "$out"
