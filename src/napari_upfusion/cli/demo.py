"""``upfusion demo``: the main job on the bundled sample pair, offline, with the project's own weights."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .options import add_engine_options, path_argument, slice_progress


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "demo",
        help="fuse the bundled MRI/PET sample with the bundled weights; write the volume, a montage and metrics",
    )
    p.add_argument("--out", type=path_argument, default=Path("upfusion-demo"), help="output folder (default: upfusion-demo)")
    add_engine_options(p, "model", "device", "precision")
    p.add_argument("--voxel-mm", type=int, default=2, choices=[1, 2, 3, 4], help="sample resolution (default 2 mm)")
    p.add_argument("--force", action="store_true", help="overwrite files of an earlier demo")
    p.add_argument("-q", "--quiet", action="store_true")
    return p


def run(args: argparse.Namespace) -> int:
    import imageio.v3 as iio

    from ..data.samples import brain_mri_pet
    from ..engine.api import FusionEngine
    from ..engine.io import write_image
    from ..engine.validate import check_paths, path_kind
    from ..errors import InputError
    from ..evaluation.report import fusion_figures, metrics_record, metrics_table
    from ..utils.files import atomic_path, atomic_write_text

    out = args.out
    names = ("fused.nii.gz", "mri.nii.gz", "pet.nii.gz", "montage.png", "metrics.txt", "metrics.json")
    if path_kind(out) == "file":
        raise InputError(f"--out {out} is a file; give a folder for the demo's files (it is created if needed).")
    check_paths([("the model", args.model if path_kind(args.model) == "file" else None)],
                [(f"the demo's {name}", out / name) for name in names])  # fmt: skip
    if path_kind(out / "fused.nii.gz") is not None and not args.force:
        raise InputError(f"{out} already holds a demo; pass --force to overwrite it or choose another --out.")
    out.mkdir(parents=True, exist_ok=True)
    pair = brain_mri_pet(voxel_mm=args.voxel_mm)
    mri, pet = pair.images()
    if not args.quiet:
        print(f"sample: {pair.description}")
    engines = {name: FusionEngine(name, device=args.device, precision=args.precision)
               for name in dict.fromkeys([args.model, "average", "maximum", "laplacian"])}  # fmt: skip
    results = {}
    for name, engine in engines.items():
        with slice_progress(f"fusing ({name})", args.quiet) as progress:
            results[name] = engine.fuse(mri, pet, modalities=pair.modalities, progress=progress)
    main = results[args.model]
    files = {"fused.nii.gz": main.image, "mri.nii.gz": mri, "pet.nii.gz": pet}
    for name, image in files.items():
        write_image(image, out / name, overwrite=args.force)
    shown = [args.model, "laplacian"] if args.model != "laplacian" else [args.model]
    picture, scores = fusion_figures(
        mri, pet, pair.modalities, {n: r.luma for n, r in results.items()}, shown,
        title=f"UP-Fusion demo: bundled MRI + PET sample ({args.voxel_mm} mm), model {args.model}",
    )  # fmt: skip
    with atomic_path(out / "montage.png") as tmp:
        iio.imwrite(tmp, picture, extension=".png")
    table = metrics_table(scores)
    where = (f"Fusion metrics of {', '.join(scores)} on the bundled MRI/PET sample: means over the central half of "
             "the axial slices, on a 0-255 grey scale.")  # fmt: skip
    atomic_write_text(out / "metrics.txt", f"{where}\n\n{table}\n")
    atomic_write_text(out / "metrics.json", json.dumps({**metrics_record(scores), "fusion": main.info}, indent=2))
    written = [out / name for name in names]
    print(f"{where}\n\n{table}")
    print(f"\n{args.model}: {main.info['seconds']:.1f} s on {main.info['device']} ({main.info['precision']}); "
          f"wrote {', '.join(str(p) for p in written)}")  # fmt: skip
    return 0
