"""The prepared GPU check runs end to end in its dry mode (CPU, tiny sizes) and writes every result file."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO_ROOT


def dry_run(script: str, tmp_path) -> Path:
    """Run ``benchmarks/<script> --dry`` as the device tool would (``$OUT`` set) and return the ``$OUT`` folder."""
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable}
    run = subprocess.run(["bash", f"benchmarks/{script}", "--dry"], check=False, cwd=REPO_ROOT, env=env,
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    return out


@pytest.mark.slow
def test_gpu_check_dry_run_writes_every_result(tmp_path):
    out = dry_run("gpu_check.sh", tmp_path)
    files = sorted(p.name for p in out.iterdir())
    assert files == ["bench.json", "bench.txt", "checks.json", "env.txt", "log.txt", "summary.md", "tests.txt"]
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", name) for name in files)  # what the device tool brings back

    checks = json.loads((out / "checks.json").read_text())
    assert checks["mode"] == "dry" and set(checks["steps"]) == {"env", "tests", "bench", "memory", "clip", "compile"}
    assert all(step["status"] == "ok" for step in checks["steps"].values()), checks["steps"]
    # the CUDA-relevant tests exist and collect
    assert checks["tests"]["exit_code"] == 0 and re.search(r"\d+ tests collected", checks["tests"]["summary"])
    # bench: both networks, fp32 and bf16 (TF32 needs CUDA and is skipped), each with its error against the CPU
    rows = json.loads((out / "bench.json").read_text())["rows"]
    assert {(r["config"], r["precision"]) for r in rows} == {
        (c, p) for c in ("small", "tiny_paper") for p in ("fp32", "bf16")
    }
    assert all(r["rel_l2_cpu"] is not None for r in rows)
    assert "skipped tf32: tf32 needs a CUDA GPU" in (out / "log.txt").read_text()
    # memory: the back-off settled below the asked batch and lost nothing (simulated cap, said so)
    memory = checks["memory"]
    assert memory["cap"].startswith("simulated") and memory["backoff"]["requested"] == 8
    assert memory["backoff"]["used"] <= 3 and memory["backoff"]["max_abs_vs_one_at_a_time"] < 1e-2
    assert memory["below_one_slice"].startswith("Not enough CPU memory to fuse even one 32 x 32 slice")
    # CLIP: the CPU codes of the authors' prompt and how far apart they and their outputs are
    assert set(checks["clip"]["code_rel_l2"]) == {"cpu-fp16 vs cpu-fp32"}
    assert 0 < checks["clip"]["code_rel_l2"]["cpu-fp16 vs cpu-fp32"] < 1e-2  # fp16 rounding, no more
    compiled = checks["compile"][0]
    assert compiled["stayed_compiled"] and compiled["rel_l2_vs_eager"] < 1e-5
    summary = (out / "summary.md").read_text()
    assert "dry run on the CPU" in summary and "| compile | ok |" in summary and "tiny_paper" in summary


def test_a_step_stopped_at_its_limit_leaves_nothing_running(tmp_path, monkeypatch):
    """On a GPU each step runs as a child with a time limit; at the limit its whole process group goes."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", REPO_ROOT / "benchmarks" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_check", gpu_check)
    spec.loader.exec_module(gpu_check)
    late = tmp_path / "late"
    with open(tmp_path / "log", "w") as log, pytest.raises(subprocess.TimeoutExpired):
        gpu_check._run_child(["bash", "-c", f"(sleep 2; touch {late}) & sleep 30"], log, 0.5)
    time.sleep(3)
    assert not late.exists()  # the grandchild was killed with its parent


@pytest.mark.slow
def test_train_gpu_dry_run_trains_and_returns_loadable_weights(tmp_path):
    """benchmarks/train_gpu.sh's dry mode: 2 tiny CPU steps with data workers, every file the device brings back."""
    out = dry_run("train_gpu.sh", tmp_path)
    files = sorted(p.name for p in out.iterdir())
    assert files == ["history.jsonl", "nvidia-smi.txt", "train-log.txt", "upfusion_small.safetensors"]
    from napari_upfusion.model import load_model
    from napari_upfusion.model.checkpoint.io import read_checkpoint_file

    model = load_model(out / "upfusion_small.safetensors")
    assert model.config.name == "small" and (out / "upfusion_small.safetensors").stat().st_size < 16e6
    recorded = json.loads(read_checkpoint_file(out / "upfusion_small.safetensors")[1]["training"])
    assert recorded["loss"] == "edges" and recorded["workers"] == 2 and recorded["steps"] == 2
