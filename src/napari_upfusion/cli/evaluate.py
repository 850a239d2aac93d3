"""``upfusion evaluate``: score fusers on two folders of registered image pairs.

    upfusion evaluate A_DIR B_DIR --modalities MRI CT --fuser small --fuser laplacian [--save DIR]

prints one row per metric and one column per fuser (means over the pairs).
No maths here: see :mod:`napari_upfusion.evaluation.evaluate`.
"""

from __future__ import annotations

import argparse
import sys

from ..modalities import MODALITIES
from .options import add_engine_options, path_argument, whole_number

DEFAULT_FUSERS = ["average", "maximum", "laplacian"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``evaluate`` sub-command."""
    parser = subparsers.add_parser(
        "evaluate",
        help="score fusers on folders of image pairs with the field's metrics",
        description=(
            "Fuse every same-named pair of PNG images in A_DIR and B_DIR with each fuser and print the mean "
            "EN, SD, SF, AG, MI, SCD, VIF, Qabf and SSIM of each fuser. Colour images are fused on Y of YCbCr."
        ),
    )
    parser.add_argument("a_dir", metavar="A_DIR", type=path_argument, help="folder of the anatomical or visible images")
    parser.add_argument("b_dir", metavar="B_DIR", type=path_argument, help="folder of the functional or infrared images")
    parser.add_argument(
        "--fuser",
        action="append",
        dest="fusers",
        metavar="NAME",
        help=f"a registered fuser to score; repeat for several (default: {', '.join(DEFAULT_FUSERS)})",
    )
    parser.add_argument("--modalities", nargs=2, metavar=("A", "B"), default=["MRI", "CT"], type=str.upper,
                        choices=list(MODALITIES),
                        help="modality of A_DIR and of B_DIR (default: MRI CT); sets the intensity rule and prompt")
    parser.add_argument("--prompt", help="text prompt for UP-Fusion models (default: the authors' prompt for paper and "
                        "authors' checkpoints, the only one their weights were trained with; the pair's built-in "
                        "prompt for small)")
    parser.add_argument("--save", type=path_argument, metavar="DIR", help="also write the fused images to DIR/<fuser>/")
    add_engine_options(parser, "device", "precision", device="cpu")
    parser.add_argument("--digits", type=whole_number("--digits", 0, maximum=12), default=4,
                        help="decimals printed, 0 to 12 (default: 4)")
    return parser


def run(args: argparse.Namespace) -> int:
    """Evaluate, print the table; returns the exit status."""
    from ..evaluation.evaluate import evaluate_pairs, format_table

    fusers = args.fusers or DEFAULT_FUSERS

    def progress(done: int, total: int) -> None:
        if sys.stderr.isatty():
            print(f"\r{done}/{total} pairs", end="" if done < total else "\n", file=sys.stderr, flush=True)

    results = evaluate_pairs(
        args.a_dir,
        args.b_dir,
        fusers,
        modalities=tuple(args.modalities),
        prompt=args.prompt,
        save_dir=args.save,
        device=args.device,
        precision=args.precision,
        progress=progress,
    )
    print(format_table(results, digits=args.digits))
    if args.save is not None:
        print(f"fused images written under {args.save}", file=sys.stderr)
    return 0
