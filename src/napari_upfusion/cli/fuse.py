"""``upfusion fuse A B -o OUT``: two image or volume files in, one fused file out."""

from __future__ import annotations

import argparse

from ..modalities import MODALITIES
from .options import add_engine_options, add_output_format, engine_options, output_format, path_argument, slice_progress


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "fuse",
        help="fuse two co-registered files (NIfTI, MHA/NRRD, DICOM folder, PNG/TIFF)",
        description="Fuse A (anatomical/visible: MRI, VIS) with B (CT, PET, SPECT, IR). The output has A's grid and "
        "geometry; B is resampled onto it when the grids differ. Values are float32 in [0, 1] (8-bit for PNG).",
    )
    p.add_argument("a", type=path_argument, help="anatomical or visible input (MRI, VIS): the network's first (visible) slot")
    p.add_argument("b", type=path_argument, help="the other modality (CT, PET, SPECT, IR): the second (infrared) slot")
    p.add_argument("-o", "--output", type=path_argument, required=True,
                   help="output file, whose extension gives the format, or with --format dicom a new folder")
    add_output_format(p, "the output's extension gives the format")
    p.add_argument("--modalities", nargs=2, metavar=("A", "B"), default=["MRI", "PET"], type=str.upper,
                   choices=list(MODALITIES), help="modality of A and of B (default: MRI PET)")
    p.add_argument("--prompt", help="text that guides the fusion. Default for the paper model and authors' "
                   "checkpoints: the authors' prompt, the only one their released weights were trained with (any "
                   "other text, e.g. a pair prompt, gives the network a channel order it never saw: an experiment). "
                   "Default for small: the pair's built-in prompt (it understands only its built-in prompts)")
    add_engine_options(p, "model", "checkpoint")
    p.add_argument("--axis", type=int, default=0, help="slicing axis of a volume (default 0)")
    add_engine_options(p, "device", "precision", "batch_size")
    p.add_argument("--colormap", choices=["hot", "jet", "pet"], help="colour a scalar B first (colour fusion)")
    p.add_argument("--grey", action="store_true", help="write luminance only, even for colour inputs")
    p.add_argument("--window", help="CT window name (fusion, bone, brain, soft-tissue) or LEVEL,WIDTH in HU")
    p.add_argument("--register", action="store_true", help="rigidly register B to A first (mutual information)")
    add_engine_options(p, "compile", "cpu_path", "clip_weights")
    p.add_argument("--force", action="store_true", help="overwrite OUTPUT if it exists")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return p


def parse_window(text: str | None):
    """``"bone"`` or ``"400,1800"`` -> the ``window`` argument of :func:`napari_upfusion.fuse`."""
    from ..errors import InputError

    if text is None or "," not in text:
        return text
    try:
        level, width = (float(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"--window takes a name or LEVEL,WIDTH in HU, got {text!r}.") from None
    return (level, width)


def run(args: argparse.Namespace) -> int:
    from ..engine.preflight import check_file_fusion

    settings = engine_options(args).as_kwargs()
    window, format = parse_window(args.window), output_format(args)
    check_file_fusion(args.a, args.b, args.output, overwrite=args.force, modalities=tuple(args.modalities),
                      colormap=args.colormap, window=window, format=format, **settings)  # before PyTorch loads: at once  # fmt: skip
    from ..engine.api import fuse_files

    with slice_progress("fusing", args.quiet) as progress:
        result, written = fuse_files(
            args.a,
            args.b,
            args.output,
            overwrite=args.force,
            format=format,
            modalities=tuple(args.modalities),
            prompt=args.prompt,
            axis=args.axis,
            colormap=args.colormap,
            color_output=False if args.grey else None,
            window=window,
            register=args.register,
            progress=progress,
            **settings,
        )
    info = result.info
    print(f"wrote {written} ({info['model']}, {info['device']}, {info['precision']}, {info['seconds']:.1f} s)")
    return 0
