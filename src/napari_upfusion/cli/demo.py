"""``upfusion demo``: the main job on the bundled sample pair, offline, with the project's own weights."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from . import PRECISION_CHOICES


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "demo",
        help="fuse the bundled MRI/PET sample with the bundled weights; write the volume, a montage and metrics",
    )
    p.add_argument("--out", type=Path, default=Path("upfusion-demo"), help="output folder (default: upfusion-demo)")
    p.add_argument("--model", default="small", help="fuser to demonstrate (default: small)")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=PRECISION_CHOICES)
    p.add_argument("--voxel-mm", type=int, default=2, choices=[1, 2, 3, 4], help="sample resolution (default 2 mm)")
    p.add_argument("--force", action="store_true", help="overwrite files of an earlier demo")
    p.add_argument("-q", "--quiet", action="store_true")
    return p


def run(args: argparse.Namespace) -> int:
    import imageio.v3 as iio
    from tqdm import tqdm

    from ..engine.api import FusionEngine
    from ..engine.io import write_image
    from ..errors import InputError
    from ..evaluation import format_table
    from ..model.cache import atomic_write_text
    from ..report import fusion_figures
    from ..samples import brain_mri_pet

    out = args.out
    if (out / "fused.nii.gz").exists() and not args.force:
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
        with tqdm(total=mri.shape[0], unit="slice", desc=f"fusing ({name})", disable=args.quiet) as bar:
            results[name] = engine.fuse(mri, pet, modalities=pair.modalities,
                                        progress=lambda done, total: bar.update(done - bar.n))  # fmt: skip
    main = results[args.model]
    written = [write_image(main.image, out / "fused.nii.gz", overwrite=args.force)]
    written += [write_image(img, out / f"{n}.nii.gz", overwrite=args.force) for n, img in (("mri", mri), ("pet", pet))]

    picture, scores = fusion_figures(mri.array, pet.array, pair.modalities, {n: r.luma for n, r in results.items()},
                                     shown=[args.model, "laplacian"])  # fmt: skip
    tmp = out / ".montage.partial.png"
    iio.imwrite(tmp, picture)
    tmp.replace(out / "montage.png")
    written.append(out / "montage.png")
    table = format_table(scores)
    atomic_write_text(out / "metrics.txt", "Mean over the central half of the axial slices; columns: MRI | PET | "
                      f"{args.model} | laplacian in montage.png\n\n{table}\n")  # fmt: skip
    atomic_write_text(out / "metrics.json", json.dumps({"scores": scores, "fusion": main.info}, indent=2))
    print(table)
    print(f"\n{args.model}: {main.info['seconds']:.1f} s on {main.info['device']} ({main.info['precision']}); "
          f"wrote {', '.join(str(p) for p in written)}, {out / 'metrics.txt'}")  # fmt: skip
    return 0
