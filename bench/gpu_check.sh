#!/usr/bin/env bash
# The first run on a CUDA machine, in minutes: the pytest tests marked `gpu`, a bf16 and an fp16 run of each recipe
# config on the real data (../shared/data: hymenoptera, sst2) for GPU_CHECK_STEPS optimizer steps, a 2-GPU DDP run
# when two GPUs exist, and the throughput of each run. Results go to bench/results/gpu_check/<UTC time>/
# (summary.md, summary.json, one log and output folder per run).
#
#   bash bench/gpu_check.sh            # or: make gpu-check
#   GPU_CHECK_STEPS=100 PYTHON=python bash bench/gpu_check.sh
#
# Without a CUDA GPU it prints why and exits 0 at once (GPU_CHECK_STRICT=1: exit 3 instead, for CI). Exit status 1
# when any step failed (every step still runs).
set -uo pipefail

cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
STEPS="${GPU_CHECK_STEPS:-300}"
NO_GPU_EXIT=0
[ "${GPU_CHECK_STRICT:-0}" = "1" ] && NO_GPU_EXIT=3

GPUS="$("$PY" -c 'import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)' 2>/dev/null)"
if [ -z "$GPUS" ] || [ "$GPUS" = "0" ]; then
    echo "gpu_check: no CUDA GPU visible to $PY (torch.cuda.is_available() is False): nothing to check here."
    echo "gpu_check: run it on a machine with an NVIDIA GPU; results go to bench/results/gpu_check/."
    exit "$NO_GPU_EXIT"
fi

OUT="bench/results/gpu_check/$(date -u +%Y%m%d-%H%M%S)"
mkdir -p "$OUT/runs"
FAILED=()
{
    date -u
    "$PY" -c 'import torch, accelerate, transformers, timm, peft, hftransfer
print("torch", torch.__version__, "cuda", torch.version.cuda, "accelerate", accelerate.__version__,
      "transformers", transformers.__version__, "timm", timm.__version__, "peft", peft.__version__,
      "hftransfer", hftransfer.__version__)
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"GPU {i}: {p.name}, {p.total_memory / 2**30:.0f} GiB, capability {p.major}.{p.minor}, "
          f"bf16 {torch.cuda.is_bf16_supported()}")'
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
} > "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"

step() {  # step NAME CMD... : run, log to $OUT/NAME.log, remember failures
    local name="$1"; shift
    echo "gpu_check: [$name] $*"
    if "$@" > "$OUT/$name.log" 2>&1; then
        echo "gpu_check: [$name] ok"
    else
        echo "gpu_check: [$name] FAILED (see $OUT/$name.log)"; tail -n 15 "$OUT/$name.log"
        FAILED+=("$name")
    fi
}

step pytest_gpu "$PY" -m pytest -m gpu -q -p no:cacheprovider tests

DATA_OK=1
for need in ../shared/data/hymenoptera ../shared/data/sst2/train.csv; do
    [ -e "$need" ] || { echo "gpu_check: $need is absent: recipe runs skipped"; DATA_OK=0; }
done
if [ "$DATA_OK" = "1" ]; then
    for config in recipes/configs/efficientnet_lite0_hymenoptera_*.yaml recipes/configs/minilm_sst2_*.yaml; do
        for mp in bf16 fp16; do
            name="$(basename "$config" .yaml)_$mp"
            step "$name" "$PY" -m hftransfer.cli train "$config" "mixed_precision=$mp" "max_steps=$STEPS" \
                epochs=1000 progress_bar=false overwrite_output_dir=true "output_dir=$OUT/runs/$name"
        done
    done
    if [ "$GPUS" -ge 2 ]; then
        name=minilm_sst2_full_bf16_ddp2
        step "$name" "$PY" -m accelerate.commands.launch --config_file recipes/configs/accelerate/multi_gpu.yaml \
            --num_processes 2 --main_process_port 0 -m hftransfer.recipes \
            --config recipes/configs/minilm_sst2_full.yaml mixed_precision=bf16 "max_steps=$STEPS" epochs=1000 \
            progress_bar=false overwrite_output_dir=true "output_dir=$OUT/runs/$name"
    else
        echo "gpu_check: one GPU: the 2-GPU DDP run is skipped"
    fi
fi

"$PY" bench/gpu_check_report.py "$OUT" --failed "${FAILED[@]}" || FAILED+=(report)
if [ "${#FAILED[@]}" -gt 0 ]; then
    echo "gpu_check: FAILED: ${FAILED[*]}"
    exit 1
fi
echo "gpu_check: all steps passed; results in $OUT"
