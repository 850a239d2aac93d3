#!/usr/bin/env bash
# napari-upfusion's one prepared GPU check: the CUDA-relevant tests on CUDA, the bench table at 256 and 512
# for small and paper (patterned authors' weights) in fp32, TF32 and bf16 with each one's error against the
# CPU's fp32 output, the batch chosen from free memory, the out-of-memory back-off forced by capping the
# process's GPU memory, the compiled / CUDA-graph path, peak memory, nvidia-smi and versions. Everything goes
# to $OUT (7 files: summary.md, checks.json, bench.txt, bench.json, tests.txt, env.txt, log.txt); what each
# step does is in benchmarks/gpu_check.py.
#
# How to run it on the device machine (which reaches no package registry: see benchmarks/device_env.sh for
# what its image lacks; napari, SimpleITK and dask are not needed by the tests it runs):
#   1. here, from the repository root, once (34 MB of wheels into .whl/, which git ignores),
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
export OUT=${OUT:-$PWD/gpu-check-out}
source benchmarks/device_env.sh "$@"
"$PY" benchmarks/gpu_check.py --out "$OUT" "$@"
