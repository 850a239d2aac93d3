"""Peak resident memory of eager and lazy (slab-by-slab) fusion against volume size.

    python benchmarks/lazy_memory.py [--sizes 64x256x256 256x256x256 512x256x256] [--model average]
                                     [--slab-mib 16] [--json results.json]

For each size ``ZxYxX`` an int16 MRI-like and a float32 PET-like volume are
written as uncompressed NIfTI into a temporary folder, then each mode runs in
a fresh Python process (so that one mode's memory cannot hide the other's):

- ``eager``: ``read_image`` both, ``FusionEngine.fuse``, ``write_image(out.nii.gz)``;
- ``lazy``: ``open_lazy`` both, ``FusionEngine.fuse`` (dask path), ``write_image(out.nii.gz)``
  (streamed slab by slab).

Each process reports its resident memory after imports and model loading
(``baseline``), its peak resident memory over its life (``ru_maxrss``) and the
wall time of the read-fuse-write; ``extra`` is peak minus baseline.  The two
outputs are compared voxel by voxel.  Use the ``average`` fuser so that the
model's own activations do not dominate (they are the same in both modes).
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

MIB = 1 << 20


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def child(mode: str, a: str, b: str, out: str, model: str, slab_mib: float) -> dict:
    """Run one fusion in this process and return its memory and time figures (bytes, seconds)."""
    import dask.array  # noqa: F401 - imported before the baseline in both modes
    import torch

    torch.set_num_threads(1)
    import napari_upfusion as nu
    from napari_upfusion.engine import slicing
    from napari_upfusion.engine.io import open_lazy

    slicing.SLAB_BYTES = int(slab_mib * MIB)
    engine = nu.get_engine(model, device="cpu")
    baseline = _rss()
    started = time.perf_counter()
    if mode == "eager":
        image_a, image_b = nu.read_image(a), nu.read_image(b)
    else:
        image_a, image_b = open_lazy(a), open_lazy(b)
    result = engine.fuse(image_a, image_b, modalities=("MRI", "PET"))
    nu.write_image(result.image, out)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    return {"mode": mode, "baseline": baseline, "peak": peak, "extra": peak - baseline, "seconds": seconds}


def make_inputs(folder: Path, shape: tuple[int, int, int]) -> tuple[Path, Path]:
    """Write the two test volumes as uncompressed NIfTI, a few slices at a time."""
    import nibabel as nib
    import numpy as np

    rng = np.random.default_rng(0)
    z, y, x = shape
    paths = []
    for name, dtype in (("a", np.int16), ("b", np.float32)):
        path = folder / f"{name}.nii"
        header = nib.Nifti1Header()
        header.set_data_shape((x, y, z))
        header.set_data_dtype(dtype)
        header.set_qform(np.diag([0.9, 0.9, 1.2, 1.0]), 1)
        header.set_sform(np.diag([0.9, 0.9, 1.2, 1.0]), 1)
        header["vox_offset"] = 352
        with open(path, "wb") as handle:
            header.write_to(handle)
            handle.write(b"\0" * (352 - handle.tell()))
            for start in range(0, z, 16):
                n = min(16, z - start)
                if dtype == np.int16:
                    block = rng.integers(0, 1200, (n, y, x)).astype(np.int16)
                else:
                    block = (rng.random((n, y, x)) ** 3 * 8).astype(np.float32)
                handle.write(block.tobytes())  # (z, y, x) C order == NIfTI (x, y, z) F order
        paths.append(path)
    return paths[0], paths[1]


def measure_peak_memory(sizes: list[tuple[int, int, int]], model: str = "average", slab_mib: float = 16) -> list[dict]:
    """Eager and lazy figures for each size (one fresh process per mode and size)."""
    import nibabel as nib
    import numpy as np

    rows = []
    for shape in sizes:
        with tempfile.TemporaryDirectory() as folder:
            folder = Path(folder)
            a, b = make_inputs(folder, shape)
            for mode in ("eager", "lazy"):
                out = folder / f"{mode}.nii.gz"
                command = [sys.executable, __file__, "--child", mode, str(a), str(b), str(out), model, str(slab_mib)]
                text = subprocess.run(command, check=True, capture_output=True, text=True).stdout
                rows.append({"shape": list(shape), "voxels": int(np.prod(shape)), **json.loads(text.splitlines()[-1])})
            same = np.array_equal(nib.load(folder / "eager.nii.gz").get_fdata(), nib.load(folder / "lazy.nii.gz").get_fdata())
            rows[-1]["equal_to_eager"] = rows[-2]["equal_to_eager"] = bool(same)
    return rows


def hardware() -> str:
    """The CPU (as ``upfusion bench`` names it) and memory, in one line."""
    import psutil
    import torch

    from napari_upfusion.evaluation.bench import hardware as machine

    return f"{machine(torch.device('cpu'))}, {psutil.virtual_memory().total / (1 << 30):.0f} GiB RAM"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["64x256x256", "256x256x256", "512x256x256"])
    parser.add_argument("--model", default="average")
    parser.add_argument("--slab-mib", type=float, default=16.0, help="lazy slab size when inputs are unchunked")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, a, b, out, model, slab = args.child
        print(json.dumps(child(mode, a, b, out, model, float(slab))))
        return
    sizes = [tuple(int(n) for n in size.split("x")) for size in args.sizes]
    rows = measure_peak_memory(sizes, args.model, args.slab_mib)
    print(f"hardware: {hardware()}; model: {args.model}; lazy slabs: {args.slab_mib:g} MiB")
    print(f"{'volume (z,y,x)':>16} {'float32 MiB':>11} {'mode':>6} {'baseline MiB':>12} {'peak MiB':>9} "
          f"{'extra MiB':>9} {'seconds':>8} {'same':>5}")
    for row in rows:
        print(f"{'x'.join(map(str, row['shape'])):>16} {row['voxels'] * 4 / MIB:>11.0f} {row['mode']:>6} "
              f"{row['baseline'] / MIB:>12.0f} {row['peak'] / MIB:>9.0f} {row['extra'] / MIB:>9.0f} "
              f"{row['seconds']:>8.1f} {row['equal_to_eager']!s:>5}")
    if args.json:
        args.json.write_text(json.dumps({"hardware": hardware(), "model": args.model, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
