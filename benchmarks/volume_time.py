"""Wall time of ``upfusion fuse`` on a whole volume pair, file to file, as a user runs it.

    python benchmarks/volume_time.py [--shape 180x256x256] [--model small] [--precision auto] [--cpu-path auto]
                                     [--json out.json]

The bundled MRI/PET sample (1 mm) is cropped or zero-padded to ``ZxYxX`` and
written as two NIfTI files in a temporary folder; then ``upfusion fuse`` runs
once in a fresh process (so the time includes starting Python, importing torch,
loading the weights, reading, fusing every slice along axis 0 and writing the
compressed NIfTI result). It prints a table: shape, model, precision, wall
seconds, slices per second and the peak resident memory of the fusing process.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _fit(volume: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Centre-crop or zero-pad ``volume`` to ``shape``."""
    out = np.zeros(shape, volume.dtype)
    src, dst = [], []
    for have, want in zip(volume.shape, shape):
        lo = max(0, (have - want) // 2)
        pad = max(0, (want - have) // 2)
        n = min(have, want)
        src.append(slice(lo, lo + n))
        dst.append(slice(pad, pad + n))
    out[tuple(dst)] = volume[tuple(src)]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="180x256x256", help="ZxYxX of the volume pair (default 180x256x256)")
    parser.add_argument("--model", default="small")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--cpu-path", default="auto", choices=["auto", "eager", "onnx"])
    parser.add_argument("--json", type=Path, help="also write the row as JSON here")
    args = parser.parse_args(argv)
    shape = tuple(int(n) for n in args.shape.lower().split("x"))

    import nibabel as nib
    import torch

    from napari_upfusion.data.samples import brain_mri_pet
    from napari_upfusion.evaluation.bench import hardware

    pair = brain_mri_pet(voxel_mm=1)
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for name, volume in (("mri", pair.a), ("pet", pair.b)):
            path = Path(tmp) / f"{name}.nii.gz"
            # (z, y, x) arrays; NIfTI stores (x, y, z), 1 mm voxels
            nib.save(nib.Nifti1Image(_fit(volume, shape).T.astype(np.float32), np.eye(4)), path)
            paths.append(path)
        out = Path(tmp) / "fused.nii.gz"
        command = [sys.executable, "-m", "napari_upfusion.cli", "fuse", str(paths[0]), str(paths[1]), "-o", str(out),
                   "--modalities", "MRI", "PET", "--model", args.model, "--precision", args.precision, "--cpu-path", args.cpu_path,
                   "-q"]  # fmt: skip
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - start
        fused_shape = nib.load(out).shape[::-1]
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    row = {
        "shape": "x".join(map(str, shape)),
        "model": args.model,
        "precision": args.precision,
        "cpu_path": args.cpu_path,
        "seconds": round(seconds, 1),
        "slices_per_s": round(shape[0] / seconds, 2),
        "peak_host_mib": round(peak_mib),
        "hardware": hardware(torch.device("cpu")),
    }
    assert fused_shape == shape, f"fused volume has shape {fused_shape}, expected {shape}"
    print("| " + " | ".join(row) + " |")
    print("|" + " --- |" * len(row))
    print("| " + " | ".join(str(v) for v in row.values()) + " |")
    if args.json:
        args.json.write_text(json.dumps(row, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
