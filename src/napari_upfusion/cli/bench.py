"""``upfusion bench``: the speed and memory table (slices per second, peak memory, ratio to the reference)."""

from __future__ import annotations

import argparse

from .options import add_engine_options, path_argument, whole_number

#: What a ``no`` / ``yes`` / ``both`` option measures.
_MEASURE = {"no": (False,), "yes": (True,), "both": (False, True)}


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "bench",
        help="measure slices/s, peak memory and accuracy of each fusion path against the authors' semantics",
        description="Each row is compared with a reference run in the same process on the same weights: one slice "
        "at a time, fp32, padded per slice (the authors' test script).",
    )
    p.add_argument("--config", action="append", dest="configs",
                   help="small, paper or a JSON config file (repeatable; default: small and paper)")
    add_engine_options(p, "device")
    p.add_argument("--size", type=whole_number("--size", 8), default=256, help="slice side in pixels (default 256)")
    p.add_argument("--slices", type=whole_number("--slices"), help="slices per run (default: 32, or 8 for paper on a CPU)")
    p.add_argument("--precision", action="append", dest="precisions",
                   help="fp32 (TF32 off), tf32, bf16, fp16 (repeatable; default: every one this device has)")
    p.add_argument("--cpu-reference", action="store_true",
                   help="on a GPU, also report each path's error against the CPU's fp32 output (vs CPU)")
    add_engine_options(p, "batch_size")
    p.add_argument("--channels-last", choices=["no", "yes", "both"], default="both")
    p.add_argument("--compile", choices=["no", "yes", "both"], default="no", help="also measure torch.compile")
    p.add_argument("--cpu-path", choices=["eager", "onnx", "both"], default="both",
                   help="on a CPU, the paths to measure: eager (PyTorch, each --precision), onnx (ONNX Runtime, fp32; "
                   "exported or found in the cache before timing) (default: %(default)s)")
    p.add_argument("--checkpoint", type=path_argument,
                   help="weights for the paper config (default: the released file if found)")
    p.add_argument("--repeat", type=whole_number("--repeat"), default=1, help="runs per row; the fastest counts")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    return p


def _log(item) -> None:
    import sys

    text = item if isinstance(item, str) else (
        f"measured {item.config} {item.path} {item.precision} batch {item.batch}: {item.slices_per_s:.2f} slices/s"
    )
    print(f"  {text}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from ..engine.runner import resolve_device
    from ..evaluation.bench import format_rows, rows_to_json, run_benchmark

    rows = run_benchmark(
        tuple(args.configs or ("small", "paper")),
        device=args.device,
        size=args.size,
        slices=args.slices,
        precisions=tuple(args.precisions or ("fp32", "tf32", "bf16", "fp16")),
        batch=args.batch_size,
        channels_last=_MEASURE[args.channels_last],
        compile=_MEASURE[args.compile],
        checkpoint=str(args.checkpoint) if args.checkpoint is not None else None,
        repeat=args.repeat,
        cpu_reference=args.cpu_reference,
        cpu_paths=("eager", "onnx") if args.cpu_path == "both" else (args.cpu_path,),
        log=None if args.json else _log,
    )
    device = resolve_device(args.device)
    print(rows_to_json(rows, device) if args.json else format_rows(rows, device))
    return 0
