"""Time of the widget's "Preview slice": one 256 x 256 slice of a whole volume pair, fused with ``small``.

    python benchmarks/preview_time.py [--shape 180x256x256] [--model small] [--repeat 5] [--json out.json]

The bundled MRI/PET sample (1 mm) is cropped or zero-padded to ``ZxYxX`` (as in
``volume_time.py``).  Each row times ``FusionEngine.fuse_slice`` on the middle
slice along axis 0 in this process, after one warm-up preview (the model is
loaded once, as in the widget): the whole call, with each volume's intensity
range computed over the whole volume, and, for comparison, the network alone
on that one slice pair (``fuse`` of the two 2-D slices).  It prints a table of
the median and fastest of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time
from pathlib import Path

import numpy as np
from volume_time import _fit


def _times(call, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        out.append(time.perf_counter() - start)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="180x256x256", help="ZxYxX of the volume pair (default 180x256x256)")
    parser.add_argument("--model", default="small")
    parser.add_argument("--precision", action="append", dest="precisions", help="auto, fp32, bf16 (default: auto, fp32)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    shape = tuple(int(n) for n in args.shape.lower().split("x"))

    import torch

    from napari_upfusion.data.samples import brain_mri_pet
    from napari_upfusion.engine.api import FusionEngine
    from napari_upfusion.evaluation.bench import hardware

    pair = brain_mri_pet(voxel_mm=1)
    mri, pet = (_fit(v, shape).astype(np.float32) for v in (pair.a, pair.b))
    index = shape[0] // 2
    rows = []
    for precision in args.precisions or ["auto", "fp32"]:
        engine = FusionEngine(args.model, device="cpu", precision=precision)
        modalities = ("MRI", "PET")
        engine.fuse_slice(mri, pet, index, modalities=modalities)  # warm-up: first-call allocations, prompt code
        preview = _times(functools.partial(engine.fuse_slice, mri, pet, index, modalities=modalities), args.repeat)
        a2, b2 = np.ascontiguousarray(mri[index]), np.ascontiguousarray(pet[index])
        network = _times(functools.partial(engine.fuse, a2, b2, modalities=modalities), args.repeat)
        rows.append({
            "model": args.model,
            "precision": engine.precision,
            "volume": "x".join(map(str, shape)),
            "slice": f"{shape[1]}x{shape[2]}",
            "preview_s_median": round(statistics.median(preview), 3),
            "preview_s_min": round(min(preview), 3),
            "slice_only_s_median": round(statistics.median(network), 3),
        })  # fmt: skip
    header = ["model", "precision", "volume", "slice", "preview s (median)", "preview s (min)", "one 2-D pair s"]
    keys = ["model", "precision", "volume", "slice", "preview_s_median", "preview_s_min", "slice_only_s_median"]
    table = [header, *[[str(row[k]) for k in keys] for row in rows]]
    widths = [max(len(line[k]) for line in table) for k in range(len(header))]
    for n, line in enumerate(table):
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths)))
        if n == 0:
            print("  ".join("-" * w for w in widths))
    print(f"\nhardware: {hardware(torch.device('cpu'))}; {args.repeat} runs a row, after one warm-up preview")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "hardware": hardware(torch.device("cpu"))}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
