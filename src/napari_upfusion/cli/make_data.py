"""``upfusion make-data OUT_DIR``: write the reproducible training pairs as ``.npz`` shards.

The pairs are those of :mod:`napari_upfusion.training_data` (packaged MNI152
and scikit-image sources, simulated second modalities); the same arguments
regenerate bit-identical shards, checked by ``manifest.json``'s SHA-256 sums.
"""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from ..training_data import build_arg_parser

    p = sub.add_parser(
        "make-data",
        help="write reproducible training pairs (simulated from packaged data) as .npz shards",
        description="Write reproducible UP-Fusion training pairs (MRI-CT, MRI-PET, MRI-SPECT, IR-VIS, generic), "
        "simulated from data that ship inside nilearn and scikit-image, as .npz shards with a manifest.",
    )
    return build_arg_parser(p)


def run(args: argparse.Namespace) -> int:
    from ..training_data import run as run_make_data

    return run_make_data(args)
