#!/usr/bin/env bash
# The GPU check of the device-agnostic trainer, in two halves:
#
#   bash scripts/gpu_check.sh prepare   # here (network to PyPI): wheels the GPU machine lacks, and the default
#                                       # model's config + tokenizer (no weights) for random-init models of its shape
#   bash scripts/gpu_check.sh run       # on the GPU machine (no network), from the repository root, with .gpu carried
#
# `run` does, in a few minutes on one GPU: the device tests (tests/test_gpu.py: a GRPO step on CUDA equal to the CPU
# step, a CUDA checkpoint resumed on the CPU, HF generation on CUDA; tests/runtime/test_device.py), then the benchmark
# workload on a random-init model of SmolLM2-135M's shape, rftune against TRL 1.16 on the same GPU, then (if
# GPU_CHECK_QWEN=1) the same on Qwen2.5-1.5B's shape. Results land in $OUT (or ./gpu-check-out).
set -euo pipefail
cd "$(dirname "$0")/.."
stage=${1:-run}
GPU=.gpu

if [ "$stage" = prepare ]; then
    grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
    mkdir -p "$GPU/wheels" "$GPU/cache/models/smollm2-135m-instruct"
    src=$(.venv/bin/python -c "from rftune.model.loading import default_model_dir; print(default_model_dir())")
    cp "$src"/*.json "$GPU/cache/models/smollm2-135m-instruct/"  # config and tokenizer files, not the weights
    for wheel in trl==1.16.0 datasets gguf reasoning-gym dill multiprocess; do
        python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
            -d "$GPU/wheels" "$wheel"
    done
    du -sh "$GPU"
    exit 0
fi

out=${OUT:-gpu-check-out}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$GPU"/wheels/*.whl
export PYTHONPATH="$PWD/src:/tmp/site" RFTUNE_CACHE="$PWD/$GPU/cache" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/runtime/test_device.py 2>&1 | tee "$out/tests.txt"
python3 benchmarks/grpo_step.py --device cuda --model smollm2-135m-random --frameworks rftune,trl --steps 3 \
    --threads 8 --json "$out/bench-smollm2.json" 2>&1 | tee "$out/bench-smollm2.txt"
if [ "${GPU_CHECK_QWEN:-0}" = 1 ]; then
    python3 benchmarks/grpo_step.py --device cuda --model qwen2.5-1.5b-random --frameworks rftune,trl --steps 2 \
        --threads 8 --json "$out/bench-qwen.json" 2>&1 | tee "$out/bench-qwen.txt"
fi
