#!/usr/bin/env bash
# One call of the device tool trains the shipped `small` weights on a lent GPU (issue 14) and sends them back.
#
# What it runs: `upfusion train` with the edges loss, from the bundled weights, batch 32 of 128 x 128 pairs that
# all but two of the machine's CPU cores generate ahead (the pair stream is the same as on the CPU: batch k is
# pairs 32k..32k+31), bf16 autocast on the GPU, a 6,000-step cosine schedule, stopped by --time-limit
# (TIME_LIMIT seconds, default 390) so the call ends well inside the tool's 10 minutes. It writes to $OUT:
# upfusion_small.safetensors (about 6 MB: the pretrained backbone is not stored), history.jsonl (loss every
# 50 steps with the wall time), train-log.txt and nvidia-smi.txt. The weights record their settings and the
# step they reached; `upfusion train OUT_DIR ... --init-from <them>` continues on the CPU or another GPU.
#
# How to run it:
#   1. here, from the repository root, once (wheels and the Colin27 brain into .whl/, which git ignores):
#        PYTHON=.venv/bin/python bash benchmarks/train_gpu.sh --fetch-wheels
#   2. the device tool's call, from the checkout that holds this script:
#        run(command="bash benchmarks/train_gpu.sh", carry=[".whl"], timeout_s=560)
#   3. put the returned weights in place with `cp <files_at>/upfusion_small.safetensors
#      src/napari_upfusion/model/weights/` after checking them (benchmarks/eval_model_card.py).
#
# Without a CUDA GPU, or with --dry, it trains 2 tiny steps on the CPU (tests/test_gpu_check.py runs it).
set -uo pipefail
cd "$(dirname "$0")/.."
export OUT=${OUT:-$PWD/train-gpu-out}
source benchmarks/device_env.sh "$@"

if [ "${1:-}" != "--dry" ] && "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    workers=$(( $(nproc) > 4 ? $(nproc) - 2 : 2 ))
    args=(--device cuda --workers "$workers" --batch-size 32 --steps 6000 --schedule-steps 6000
          --time-limit "${TIME_LIMIT:-390}" --save-every 500 --log-every 50)
    nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1
else
    args=(--device cpu --workers 2 --batch-size 2 --crop 32 --steps 2 --log-every 1 --threads 1 --anatomies mni152)
    echo "dry run: no CUDA GPU (or --dry); 2 tiny steps on the CPU" >"$OUT/nvidia-smi.txt"
fi
run="$scratch/run"
"$PY" -m napari_upfusion.cli train "$run" --loss edges --init-from bundled --lr 3e-4 "${args[@]}" \
    >"$OUT/train-log.txt" 2>&1
status=$?
cp "$run/history.jsonl" "$OUT/" 2>/dev/null
cp "$run/upfusion_small.safetensors" "$OUT/" 2>/dev/null
tail -n 3 "$OUT/train-log.txt"
exit $status
