#!/usr/bin/env bash
# napari-upfusion's one prepared GPU check: the CUDA-relevant tests on CUDA, the bench table at 256 and 512
# for small and paper (patterned authors' weights) in fp32, TF32 and bf16 with each one's error against the
# CPU's fp32 output, the batch chosen from free memory, the out-of-memory back-off forced by capping the
# process's GPU memory, the compiled / CUDA-graph path, peak memory, nvidia-smi and versions. Everything goes
# to $OUT (7 files: summary.md, checks.json, bench.txt, bench.json, tests.txt, env.txt, log.txt); what each
# step does is in benchmarks/gpu_check.py.
#
# How to run it on the device machine (which reaches no package registry; its image has python3 with torch,
# torchvision, timm, numpy, scipy, scikit-image, pandas, scikit-learn, pytest, hypothesis, psutil and
# safetensors, but not open_clip_torch, ftfy, wcwidth, platformdirs, nibabel or nilearn; napari, SimpleITK
# and dask are not needed by the tests it runs):
#   1. here, from the repository root, once (17 MB of wheels into .whl/, which git ignores),
#      with a Python that has the project installed so the wheels match the tested versions:
#        PYTHON=.venv/bin/python bash benchmarks/gpu_check.sh --fetch-wheels
#   2. the device tool's call (the tool sends the session's own checkout, so run it from the checkout that
#      holds this script):
#        run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=560)
#      It finishes in under 8 minutes: every step has its own limit and all of them share a budget of 450 s
#      (gpu_check.py's BUDGET_S); a step stopped at its limit keeps what it wrote, the next one runs.
#
# Without a CUDA GPU, or with --dry, it runs a dry mode on the CPU (tiny sizes, small and a tiny paper-shaped
# CLIP config, the tests only collected): seconds, and tests/test_gpu_check.py runs it. OUT defaults to
# ./gpu-check-out when unset.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=(open_clip_torch ftfy wcwidth platformdirs nibabel nilearn)

if [ "${1:-}" = "--fetch-wheels" ]; then
    pins=$("$PY" -c "import sys
from importlib.metadata import version
print(' '.join(f'{n}=={version(n)}' for n in sys.argv[1:]))" "${WHEELS[@]}") || exit 1
    mkdir -p .whl
    # pure-Python wheels (py3-none-any) for the device's Python 3.12
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 -d .whl $pins || exit 1
    ls -l .whl
    exit 0
fi

export OUT=${OUT:-$PWD/gpu-check-out}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
export UPFUSION_CACHE_DIR="$scratch/cache"   # never the user's own cache
# the package from this working tree; the carried wheels only where the image lacks them
site="$scratch/site"
if ! "$PY" -c "import open_clip, ftfy, platformdirs, nibabel, nilearn" 2>/dev/null; then
    if ls .whl/*.whl >/dev/null 2>&1; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .whl/*.whl \
            >>"$OUT/log.txt" 2>&1 || { echo "installing the carried wheels failed; see $OUT/log.txt"; exit 1; }
    else
        echo "${WHEELS[*]} are not all installed and no wheels were carried: run" \
             "'bash benchmarks/gpu_check.sh --fetch-wheels' here first and carry .whl" | tee -a "$OUT/log.txt"
        exit 1
    fi
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
[ -d "$site" ] && export PYTHONPATH="$PYTHONPATH:$site"
"$PY" benchmarks/gpu_check.py --out "$OUT" "$@"
