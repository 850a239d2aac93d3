"""``upfusion download clip``: the one download napari-upfusion can do, and only when asked."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "download",
        help="fetch CLIP ViT-B/32 text weights into the user cache (needs internet); "
        "the authors' checkpoint cannot be fetched, this prints where to get it",
    )
    parser.add_argument("what", choices=["clip", "paper"], help="clip: OpenAI CLIP ViT-B/32; paper: instructions only")
    return parser


def run(args: argparse.Namespace) -> int:
    from ..model.checkpoint.weights import PAPER_CHECKPOINT_ENV, PAPER_CHECKPOINT_LINKS, default_paper_checkpoint_path
    from ..model.text.clip import download_clip_weights

    if args.what == "paper":
        print(
            "The authors' checkpoint is on Google Drive and Baidu, which cannot be fetched reliably by a program.\n"
            f"Download Fuse.pth from one of:\n  {PAPER_CHECKPOINT_LINKS[0]}\n  {PAPER_CHECKPOINT_LINKS[1]}\n"
            f"and save it as {default_paper_checkpoint_path()} (or set {PAPER_CHECKPOINT_ENV} to its path)."
        )
        return 0
    path = download_clip_weights()
    print(f"CLIP ViT-B/32 weights saved to {path}")
    return 0
