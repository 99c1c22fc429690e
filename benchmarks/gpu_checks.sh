#!/usr/bin/env bash
# The GPU checks of one lent-GPU call, prepared so that a session spends its device minutes measuring.
# Run it through the device tool, carrying .device-wheels (made by ../shared/tools/pack-device-wheels):
#     bash benchmarks/gpu_checks.sh        # results under $OUT (./outputs/gpu when unset)
# At most ten minutes (one device command): the tests marked gpu (where pytest is there), bench_gpu.py in
# bfloat16 for every form but the grouped one (its cliff is measured in issue 10), batch and stage count,
# float32 and float16 at one batch, an AOTInductor engine's compile time, load time and speed, then the
# Ray pipeline on the GPU against the same engine's bare loop and the engine alone (issue 12).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-outputs/gpu}"
mkdir -p "$out"
if [ -d .device-wheels ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target .site .device-wheels/*.whl \
        && export PYTHONPATH="$PWD/.site:$PWD" PATH="$PWD/.site/bin:$PATH"
fi
export PYTHONPATH="${PYTHONPATH:-$PWD}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
if python3 -c "import pytest" 2>/dev/null; then
    timeout 40 python3 -m pytest -q -p no:cacheprovider -m gpu tests 2>&1 | tail -20 | tee "$out/gpu-tests.txt"
fi
timeout 200 python3 benchmarks/bench_gpu.py --precisions bfloat16 --forms batched,folded,fused,fused-folded \
    --batches 8,16,32,64,128 --json "$out/bench_bf16.json" 2>&1 | tee "$out/bench_bf16.md"
timeout 80 python3 benchmarks/bench_gpu.py --precisions float32,float16 --forms batched,fused --batches 32 \
    --stages 1 --json "$out/bench_fp.json" 2>&1 | tee "$out/bench_fp.md"
timeout 140 python3 benchmarks/bench_gpu.py --precisions bfloat16 --forms fused --batches 32 --stages 1 --aoti \
    --json "$out/bench_aoti.json" 2>&1 | tee "$out/bench_aoti.md"
timeout 130 python3 benchmarks/bench_pipeline.py --gpu --precision bfloat16 --images 1024 --batch 32 \
    --work /tmp/e2style-bench-pipeline 2>&1 | grep -v "^20[0-9][0-9]-" | tee "$out/bench_pipeline.md"
