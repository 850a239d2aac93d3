"""The one prepared GPU check: everything a single device run should measure, written to one folder.

``benchmarks/gpu_check.sh`` prepares the environment and calls this; its header has the exact device
call.  The steps, in order of importance (each in a process of its own with a time limit, so that a slow
or hung step costs only its own time, and all of them within :data:`BUDGET_S` seconds):

``env``      nvidia-smi, versions, ``upfusion info``                          -> ``env.txt``
``tests``    the test suite's CUDA-relevant tests (:data:`CUDA_TESTS`) on CUDA    -> ``tests.txt``
``bench``    ``upfusion bench`` at 256 x 256 and 512 x 512 for ``small`` and ``paper`` (the patterned
             authors' checkpoint) in fp32 (TF32 off), TF32 and bf16, each with its error against the
             CPU's fp32 output, peak memory                                   -> ``bench.txt``, ``bench.json``
``memory``   the batch chosen from free GPU memory and the memory it really took; the out-of-memory
             back-off forced by capping this process's GPU memory             -> ``checks.json``
``clip``     the authors' prompt's CLIP code on CUDA and on the CPU (random CLIP stand-in) and what the
             difference does to the paper network's output                    -> ``checks.json``
``compile``  ``torch.compile`` with CUDA graphs ("reduce-overhead") against eager -> ``checks.json``

``summary.md`` digests all of it and ``log.txt`` holds every step's own output.

Dry mode (no CUDA GPU, or ``--dry``): the same steps on the CPU at tiny sizes, with ``small`` and a tiny
paper-shaped CLIP config instead of the patterned checkpoint, all but ``env`` in the driver's own process
(``env`` still runs as a child, so that path is exercised too); the tests are only collected, the GPU
memory cap is simulated by a fuser that fails above a batch size (said so in the record) and compilation
uses torch's eager backend.  tests/test_gpu_check.py runs it.

This module sits beside the engine and uses it; nothing in the package imports it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PATTERNED = REPO / "tests" / "data" / "upfusion_paper_patterned.pth.gz"
GOLDEN = REPO / "tests" / "data" / "upfusion_golden_io.npz"
#: Test files whose tests exercise what a GPU changes (device choice, precision, TF32, CLIP codes, the
#: network's numbers, batching, training); they need no napari, SimpleITK, nibabel or dask.
CUDA_TESTS = (
    "tests/test_authors_defaults.py",
    "tests/test_model_golden.py",
    "tests/test_engine.py",
    "tests/test_text.py",
    "tests/test_training.py",
    "tests/test_checkpoint.py",
    "tests/test_properties.py",
    "tests/test_backbone.py",
)
#: Tests in :data:`CUDA_TESTS` that need a package the device image may lack (a 50 MB binary wheel too big to
#: carry), deselected where it is missing.
NEEDS = {"SimpleITK": ("tests/test_engine.py::test_pet_at_2mm_fused_with_mri_at_1mm_lands_on_the_mri_grid",)}
#: Whole check, all steps together (the device run's limit is 8 minutes, Python and pip start included).
BUDGET_S = 450
#: Each step's own limit in seconds, in the order they run.
STEPS = {"env": 30, "tests": 180, "bench": 130, "memory": 50, "clip": 35, "compile": 120}
CHECKS = ("memory", "clip", "compile")


def _log(item: object) -> None:
    """Progress on stderr (``log.txt``): a note, or a measured bench row."""
    if not isinstance(item, str):
        item = f"measured {item.config} {item.size}x{item.size} {item.precision}: {item.slices_per_s:.2f} slices/s"
    print(item, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- settings per mode


@dataclasses.dataclass
class Setup:
    """What a run measures: the real thing on a GPU, tiny stand-ins in dry mode."""

    dry: bool
    device: str
    configs: tuple[str, ...]
    sizes: tuple[tuple[int, int], ...]  # (slice side, slices)
    checkpoint: str | None

    @classmethod
    def make(cls, dry: bool, scratch: Path) -> Setup:
        if not dry:
            return cls(False, "cuda", ("small", "paper"), ((256, 16), (512, 8)), str(PATTERNED))
        return cls(True, "cpu", ("small", str(_tiny_config(scratch))), ((32, 2),), None)


def _tiny_config(scratch: Path) -> Path:
    """A paper-shaped config with a CLIP text encoder, small enough for a dry run (random weights)."""
    path = scratch / "tiny_paper.json"
    fields = {"dim": 8, "num_blocks": [1, 1, 1, 1], "num_refinement_blocks": 1, "heads": [1, 1, 2, 2],
              "backbone": "convnext_atto", "backbone_input_size": 32}  # fmt: skip
    path.write_text(json.dumps(fields))
    return path


def _paper_like(setup: Setup, device):
    """The paper network (patterned authors' weights) on a GPU; the tiny CLIP config in dry mode."""
    import torch

    from napari_upfusion.model import create_model, load_model
    from napari_upfusion.model.factory import config_from

    if setup.checkpoint:
        return load_model(setup.checkpoint, device)
    torch.manual_seed(0)
    return create_model(config_from(setup.configs[1]), device).eval().requires_grad_(False)


def _golden_code():
    import numpy as np
    import torch

    with np.load(GOLDEN) as data:
        return torch.from_numpy(data["gray_text"][:1].copy())


# --------------------------------------------------------------------------- steps


def step_env(setup: Setup, out: Path, part: dict) -> None:
    from importlib import metadata

    import torch

    lines = [f"mode: {'dry (CPU)' if setup.dry else 'GPU'}", f"python: {sys.version.split()[0]} ({sys.executable})"]
    lines.append(f"platform: {platform.platform()}, {os.cpu_count()} CPUs")
    lines.append(f"torch: {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        lines.append(f"GPU: {props.name}, {props.total_memory / 2**30:.1f} GiB, capability {props.major}.{props.minor}, "
                     f"bf16 {torch.cuda.is_bf16_supported()}")  # fmt: skip
    try:
        lines.append(f"TF32 defaults: matmul {torch.backends.cuda.matmul.allow_tf32}, cuDNN {torch.backends.cudnn.allow_tf32}")
    except RuntimeError as error:
        lines.append(f"TF32 defaults: {error}")
    for name in ("numpy", "torchvision", "timm", "open_clip_torch", "safetensors", "platformdirs", "triton"):
        try:
            lines.append(f"{name}: {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            lines.append(f"{name}: not installed")
    from napari_upfusion.cli.info import collect

    lines += ["", "upfusion info:"] + [f"  {k}: {v}" for k, v in collect().items()]
    smi = shutil.which("nvidia-smi")
    lines += ["", "nvidia-smi:"]
    lines.append(subprocess.run([smi], check=False, capture_output=True, text=True).stdout if smi else "  (not found)")
    (out / "env.txt").write_text("\n".join(lines) + "\n")
    part["env"] = {"torch": torch.__version__, "cuda": torch.version.cuda,
                   "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}  # fmt: skip


def step_tests(setup: Setup, out: Path, part: dict) -> None:
    import importlib.util

    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", *CUDA_TESTS]
    if setup.dry:
        command.insert(4, "--collect-only")
    missing = [name for name in NEEDS if importlib.util.find_spec(name) is None]
    command += [f"--deselect={test}" for name in missing for test in NEEDS[name]]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    report = out / "tests.txt"
    with open(report, "w") as handle:  # streamed, so a run stopped at its limit still shows how far it got
        handle.write(f"$ python {' '.join(command[1:])}\n\n")
        handle.flush()
        code = _run_child(command, handle, None, cwd=REPO, env=env)
    last = [line for line in report.read_text().splitlines() if line.strip()][-1:] or [""]
    part["tests"] = {"exit_code": code, "summary": last[0].strip("= "), "collect_only": setup.dry,
                     "deselected_for_missing": missing}  # fmt: skip
    if code != 0:
        raise RuntimeError(f"pytest exited with {code}: {last[0]}")


def step_bench(setup: Setup, out: Path, part: dict) -> None:
    import torch

    from napari_upfusion.evaluation.bench import format_rows, hardware, run_benchmark

    rows, tables = [], []
    for size, slices in setup.sizes:
        # channels-last both ways at the first size only; the GPU default (channels-last) at the larger one
        layouts = (False,) if setup.dry else (False, True) if size == setup.sizes[0][0] else (True,)
        found = run_benchmark(
            setup.configs, device=setup.device, size=size, slices=slices, precisions=("fp32", "tf32", "bf16"),
            batch="auto", channels_last=layouts, compile=(False,), checkpoint=setup.checkpoint, repeat=1,
            cpu_reference=True, cpu_paths=("eager",), log=_log,  # the ONNX path is a CPU path: not this check's
        )  # fmt: skip
        rows += found
        tables.append(format_rows(found))
        # written after each size, so a step stopped at its limit keeps what it measured
        device = torch.device(setup.device)
        (out / "bench.txt").write_text("\n\n".join(tables) + f"\nhardware: {hardware(device)}\n")
        rows_json = [dataclasses.asdict(r) for r in rows]
        (out / "bench.json").write_text(json.dumps({"hardware": hardware(device), "rows": rows_json}, indent=2))
    part["bench"] = {"rows": len(rows)}


def _capped(inner, limit: int):
    import torch

    class Capped(torch.nn.Module):
        uses_text = True

        def __init__(self) -> None:
            super().__init__()
            self.inner, self.config = inner, inner.config

        def forward(self, a, b, code):
            if a.shape[0] > limit:
                raise torch.OutOfMemoryError("simulated: the batch does not fit the capped memory")
            return self.inner(a, b, code)

    return Capped()


def step_memory(setup: Setup, out: Path, part: dict) -> None:
    import numpy as np
    import torch

    from napari_upfusion.engine.runner import SliceRunner, available_bytes, estimate_slice_bytes
    from napari_upfusion.errors import UPFusionError
    from napari_upfusion.evaluation.bench import synthetic_stack

    device = torch.device(setup.device)
    model = _paper_like(setup, device)
    code = _golden_code()
    size = 512 if not setup.dry else 32
    record: dict = {"network": "paper (patterned)" if setup.checkpoint else "tiny CLIP config", "slice": size}
    part["memory"] = record
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        record["weights_mb"] = round(torch.cuda.memory_allocated() / 2**20)
    auto = SliceRunner(model, device, "fp32", batch_size="auto")
    record["free_mb"] = round(available_bytes(device) / 2**20)
    record["estimate_per_slice_mb"] = round(estimate_slice_bytes(model, size, size, "fp32") / 2**20)
    chosen = auto.choose_batch(size, size)
    record["auto_batch"] = chosen
    requested, room = 8, 3  # the back-off below: a batch of 8 asked for, room for about 3 slices
    a, b = synthetic_stack(max(chosen, requested), size)
    # one slice at a time: the reference numbers, and the memory one slice really takes
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    reference = SliceRunner(model, device, "fp32", batch_size=1).run(a[:requested], b[:requested], code)
    if cuda:
        per_slice = torch.cuda.max_memory_allocated() - record["weights_mb"] * 2**20
        record["measured_per_slice_mb"] = round(per_slice / 2**20)
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    full = auto.run(a[:chosen], b[:chosen], code)
    record["auto_seconds"] = round(time.perf_counter() - started, 3)
    record["auto_batch_used"] = auto.batch_size_used  # below auto_batch if the estimate was too small
    if cuda:
        record["auto_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
        # cap this process's GPU memory to the weights and about ``room`` slices: a batch of 8 must back off
        total = torch.cuda.get_device_properties(device).total_memory
        allowed = torch.cuda.memory_allocated() + room * per_slice + (256 << 20)
        record["cap_mb"] = round(allowed / 2**20)
        torch.cuda.empty_cache()
        torch.cuda.set_per_process_memory_fraction(min(1.0, allowed / total), device)
        capped, fuser = True, model
    else:
        record["cap"] = f"simulated: a fuser that fails above a batch of {room} (no CUDA memory to cap)"
        capped, fuser = False, _capped(model, room)
    try:
        runner = SliceRunner(fuser, device, "fp32", batch_size=requested)
        backed_off = runner.run(a[:requested], b[:requested], code)
        record["backoff"] = {"requested": requested, "used": runner.batch_size_used,
                             "max_abs_vs_one_at_a_time": float(np.abs(backed_off - reference).max())}  # fmt: skip
        try:  # a cap below one slice: one sentence, no traceback
            tiny = _capped(model, 0) if not capped else model
            if capped:
                torch.cuda.set_per_process_memory_fraction(min(1.0, (torch.cuda.memory_allocated() + (8 << 20)) / total))
            SliceRunner(tiny, device, "fp32", batch_size=2).run(a[:2], b[:2], code)
            record["below_one_slice"] = "fused (the cap was not tight enough)"
        except UPFusionError as error:
            record["below_one_slice"] = str(error)
    finally:
        if capped:
            torch.cuda.set_per_process_memory_fraction(1.0, device)
            torch.cuda.empty_cache()
    record["auto_matches_one_at_a_time_max_abs"] = float(np.abs(full[: min(chosen, requested)] - reference[: min(chosen, requested)]).max())


def step_clip(setup: Setup, out: Path, part: dict) -> None:
    import numpy as np
    import open_clip
    import torch

    from napari_upfusion.engine.runner import SliceRunner
    from napari_upfusion.model.text.clip import ClipTextEncoder
    from napari_upfusion.model.text.prompts import AUTHORS_PROMPT

    record: dict = {"weights": "random open_clip ViT-B-32-quickgelu stand-in saved in fp16, not OpenAI's"}
    part["clip"] = record
    torch.manual_seed(0)
    clip = open_clip.create_model("ViT-B-32-quickgelu", pretrained=None).eval()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "ViT-B-32.pt"
        torch.save({k: v.half() for k, v in clip.state_dict().items()}, path)  # fp16, as OpenAI's file
        del clip
        codes = {"cpu-fp16": ClipTextEncoder(path, "fp16", "cpu").encode([AUTHORS_PROMPT]),
                 "cpu-fp32": ClipTextEncoder(path, "fp32", "cpu").encode([AUTHORS_PROMPT])}  # fmt: skip
        if torch.cuda.is_available():
            codes["cuda-fp16"] = ClipTextEncoder(path, "fp16", "cuda").encode([AUTHORS_PROMPT])

    def rel(x, y) -> float:
        return float((x - y).norm() / y.norm())

    names = sorted(codes)
    record["code_rel_l2"] = {f"{x} vs {y}": rel(codes[x], codes[y]) for i, x in enumerate(names) for y in names[i + 1 :]}
    device = torch.device(setup.device)
    model = _paper_like(setup, device)
    with np.load(GOLDEN) as data:
        a, b = data["gray_vi"][:, 0].copy(), data["gray_ir"][:, 0].copy()
    outputs = {k: SliceRunner(model, device, "fp32", batch_size=1).run(a, b, c) for k, c in codes.items()}
    record["output_rel_l2"] = {
        f"{x} vs {y}": float(np.linalg.norm(outputs[x] - outputs[y]) / np.linalg.norm(outputs[y]))
        for i, x in enumerate(names)
        for y in names[i + 1 :]
    }


def step_compile(setup: Setup, out: Path, part: dict) -> None:
    import numpy as np
    import torch

    from napari_upfusion.engine.runner import SliceRunner, compile_fuser
    from napari_upfusion.evaluation.bench import _load, synthetic_stack

    device = torch.device(setup.device)
    records: list = []
    part["compile"] = records
    size, slices = (32, 3) if setup.dry else (256, 12)
    a, b = synthetic_stack(slices, size)
    # small first: the paper network may not finish compiling within the limit; a dry run compiles only the
    # paper-shaped config (torch.compile's tracing is the slow part on a CPU)
    for config in setup.configs[-1:] if setup.dry else setup.configs:
        model, weights = _load(config, setup.checkpoint if config != "small" else None, device)
        code = _golden_code() if model.config.text_encoder != "prompt-table" else model.prompt_codes[:1].cpu()
        compiled = torch.compile(model, backend="eager") if setup.dry else compile_fuser(model, device)
        record = {"config": Path(config).stem, "weights": weights, "slice": size, "slices": slices,
                  "backend": "eager (dry)" if setup.dry else "inductor, reduce-overhead (CUDA graphs)"}  # fmt: skip
        records.append(record)
        _write_part(part)
        eager = SliceRunner(model, device, "fp32", batch_size=4)
        eager.run(a[:4], b[:4], code)
        started = time.perf_counter()
        reference = eager.run(a, b, code)
        record["eager_slices_per_s"] = round(slices / (time.perf_counter() - started), 2)
        runner = SliceRunner(model, device, "fp32", batch_size=4, compiled=compiled)
        started = time.perf_counter()
        runner.run(a[:4], b[:4], code)
        record["first_batch_s"] = round(time.perf_counter() - started, 1)  # compilation and graph capture
        _write_part(part)
        if runner.compiled is None:
            record["fell_back"] = runner.compile_error
            _write_part(part)
            continue
        started = time.perf_counter()
        fused = runner.run(a, b, code)
        if device.type == "cuda":
            torch.cuda.synchronize()
        record["compiled_slices_per_s"] = round(slices / (time.perf_counter() - started), 2)
        record["stayed_compiled"] = runner.compiled is not None
        record["rel_l2_vs_eager"] = float(np.linalg.norm(fused - reference) / np.linalg.norm(reference))
        _write_part(part)


# --------------------------------------------------------------------------- driver

STEP_FUNCTIONS = {"env": step_env, "tests": step_tests, "bench": step_bench, "memory": step_memory,
                  "clip": step_clip, "compile": step_compile}  # fmt: skip
_PART_FILE: Path | None = None


def _run_child(command: list[str], log, timeout: float | None, **options) -> int:
    """Run ``command`` with its output in ``log``; at ``timeout`` it is killed with every process it started."""
    import signal

    child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **options)
    try:
        return child.wait(timeout)
    except BaseException:  # the limit, or this process being stopped: leave nothing running
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        raise


def _write_part(part: dict) -> None:
    if _PART_FILE is not None:
        _PART_FILE.write_text(json.dumps(part, indent=2, default=str))


def _run_step(name: str, setup: Setup, out: Path, part: dict) -> None:
    try:
        STEP_FUNCTIONS[name](setup, out, part)
    finally:
        _write_part(part)


def _summary(setup: Setup, checks: dict, out: Path) -> str:
    lines = [f"# napari-upfusion GPU check ({'dry run on the CPU' if setup.dry else 'GPU'})", ""]
    env = checks.get("env") or {}
    lines.append(f"torch {env.get('torch')}, CUDA {env.get('cuda')}, GPU {env.get('gpu')}")
    lines += ["", "| step | status | seconds |", "| --- | --- | --- |"]
    lines += [f"| {name} | {s['status']} | {s['seconds']} |" for name, s in checks["steps"].items()]
    if "tests" in checks:
        lines += ["", f"tests: {checks['tests']['summary']} (exit {checks['tests']['exit_code']})"]
    bench = out / "bench.txt"
    if bench.exists():
        lines += ["", "## bench", "", "```", bench.read_text().rstrip(), "```"]
    for name in CHECKS:
        if name in checks:
            lines += ["", f"## {name}", "", "```", json.dumps(checks[name], indent=2, default=str), "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    global _PART_FILE
    parser = argparse.ArgumentParser(description="napari-upfusion's prepared GPU check (see gpu_check.sh).")
    parser.add_argument("--out", type=Path, required=True, help="folder for every result file")
    parser.add_argument("--dry", action="store_true", help="the CPU dry mode even where a GPU is present")
    parser.add_argument("--step", choices=list(STEPS), help=argparse.SUPPRESS)  # one step, in a child process
    parser.add_argument("--part", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--scratch", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    import torch

    dry = args.dry or not torch.cuda.is_available()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    if args.step:  # a child: one step, its findings in the part file
        _PART_FILE = args.part
        _run_step(args.step, Setup.make(dry, args.scratch), out, {})
        return 0
    started = time.perf_counter()
    checks: dict = {"mode": "dry" if dry else "gpu", "budget_s": BUDGET_S, "steps": {}}
    with tempfile.TemporaryDirectory() as folder, open(out / "log.txt", "a") as log:
        scratch = Path(folder)
        setup = Setup.make(dry, scratch)
        for name, limit in STEPS.items():
            left = BUDGET_S - (time.perf_counter() - started)
            t0 = time.perf_counter()
            part_file = scratch / f"{name}.json"
            if left < 5:
                checks["steps"][name] = {"status": "skipped: the check's time budget was spent", "seconds": 0}
                continue
            log.write(f"\n===== {name} =====\n")
            log.flush()
            if dry and name != "env":  # in this process: a dry run should not spend its time starting Pythons
                part: dict = {}
                _PART_FILE = part_file
                try:
                    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                        _run_step(name, setup, out, part)
                    status = "ok"
                except Exception as error:  # noqa: BLE001 - recorded, and the next step runs
                    traceback.print_exc(file=log)
                    status = f"failed: {type(error).__name__}: {error}"
                _PART_FILE = None
            else:
                command = [sys.executable, __file__, "--out", str(out), "--step", name, "--part", str(part_file),
                           "--scratch", str(scratch)]  # fmt: skip
                try:
                    code = _run_child(command, log, min(limit, left))
                    status = "ok" if code == 0 else f"failed: exit {code} (see log.txt)"
                except subprocess.TimeoutExpired:
                    status = f"stopped at its limit of {min(limit, left):.0f} s (what it wrote is kept)"
            if part_file.exists():
                checks.update(json.loads(part_file.read_text()))
            checks["steps"][name] = {"status": status, "seconds": round(time.perf_counter() - t0, 1)}
            log.flush()
        checks["seconds"] = round(time.perf_counter() - started, 1)
        (out / "checks.json").write_text(json.dumps(checks, indent=2, default=str))
        (out / "summary.md").write_text(_summary(setup, checks, out))
    print((out / "summary.md").read_text())
    return 0 if all(s["status"] == "ok" for s in checks["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
