"""``upfusion make-data OUT_DIR``: write the reproducible training pairs as ``.npz`` shards.

The pairs are those of :mod:`napari_upfusion.data.synthetic` (packaged MNI152,
Colin27 and scikit-image sources, simulated second modalities); the same arguments
regenerate bit-identical shards, checked by ``manifest.json``'s SHA-256 sums.
"""

from __future__ import annotations

import argparse

from .options import path_argument, whole_number


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from ..data.vocabulary import ANATOMIES, KINDS

    p = sub.add_parser(
        "make-data",
        help="write reproducible training pairs (simulated from packaged data) as .npz shards",
        description="Write reproducible UP-Fusion training pairs (MRI-CT, MRI-PET, MRI-SPECT, IR-VIS, generic), "
        "simulated from data that ship inside nilearn, scikit-image and Debian's mricron-data, as .npz shards with a "
        "manifest.",
    )
    p.add_argument("out_dir", type=path_argument, help="folder for the .npz shards and manifest.json")
    p.add_argument("--pairs", type=whole_number("--pairs"), default=20000, help="number of pairs (default 20000)")
    p.add_argument("--seed", type=whole_number("--seed", 0), default=0, help="seed of the pair stream (default 0)")
    p.add_argument("--size", type=whole_number("--size", 32, maximum=1024), default=128,
                   help="side of each square image in pixels, 32 to 1024 (default 128)")
    p.add_argument("--shard-size", type=whole_number("--shard-size"), default=1000, help="pairs per shard (default 1000)")
    p.add_argument(
        "--kinds",
        nargs="+",
        default=list(KINDS),
        choices=KINDS,
        metavar="KIND",
        help=f"kinds of pair, cycled in order (default: {' '.join(KINDS)})",
    )
    p.add_argument(
        "--anatomies",
        nargs="+",
        default=list(ANATOMIES),
        choices=ANATOMIES,
        metavar="ANATOMY",
        help="head anatomies of the medical pairs, drawn with equal chances (default: mni152 colin27; "
        "colin27 needs Debian's mricron-data)",
    )
    return p


def run(args: argparse.Namespace) -> int:
    from ..data.synthetic import make_dataset
    from ..engine.validate import path_kind
    from ..errors import InputError

    if path_kind(args.out_dir) == "file":
        raise InputError(f"{args.out_dir} is a file; give a folder for the shards (it is created if needed).")

    manifest = make_dataset(
        args.out_dir, args.pairs, args.seed, args.size, args.kinds, args.shard_size, progress=True,
        anatomies=args.anatomies,
    )  # fmt: skip
    print(f"wrote {manifest['n_pairs']} pairs in {len(manifest['shards'])} shards to {args.out_dir}")
    return 0
