"""``upfusion train OUT_DIR``: reproduce the project's own weights (resumable)."""

from __future__ import annotations

import argparse

from .options import number, path_argument, whole_number


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from ..data.vocabulary import ANATOMIES
    from ..training.settings import LOSS_NAMES, TrainSettings

    d = TrainSettings()
    p = sub.add_parser(
        "train",
        help="train a small UP-Fusion on regenerated pairs (never on evaluation data); resumes from OUT_DIR/last.pt",
    )
    p.add_argument("out_dir", type=path_argument)
    p.add_argument(
        "--config",
        default=d.config,
        help=f"model config: small, paper or a JSON config file (default {d.config}); a CLIP-conditioned config "
        "(paper) is trained, as the authors trained it, with the CLIP code of their prompt, which needs CLIP weights",
    )
    p.add_argument("--clip-weights", type=path_argument,
                   help="CLIP ViT-B/32 weights file (CLIP-conditioned configs; default: as found)")
    p.add_argument("--steps", type=whole_number("--steps"), default=d.steps, help="stop after this many steps")
    p.add_argument(
        "--schedule-steps",
        type=whole_number("--schedule-steps", minimum=0),
        default=d.schedule_steps,
        help="length of the cosine learning-rate schedule (default: --steps); stop early on a longer schedule",
    )
    p.add_argument("--batch-size", type=whole_number("--batch-size"), default=d.batch_size)
    p.add_argument(
        "--crop",
        type=whole_number("--crop", 32, 8),
        default=d.crop,
        help="training crop size in pixels (a multiple of 8)",
    )
    p.add_argument("--lr", type=number("--lr", 0, 10), default=d.lr, help="peak learning rate, above 0 and at most 10")
    p.add_argument("--seed", type=whole_number("--seed", 0), default=d.seed)
    p.add_argument("--precision", choices=["fp32", "bf16"], default=d.precision, help="autocast precision on the CPU or GPU")
    p.add_argument("--loss", choices=LOSS_NAMES, default=d.loss,
                   help="training loss: the authors' (default), or 'edges': each edge's signed gradient and, half-way, the "
                   "intensity taken from the locally more active source")
    p.add_argument("--init-from", default=d.init_from, metavar="WEIGHTS",
                   help="start from the tensors of this weights file that fit (never the backbone); "
                   "'bundled' means the shipped small weights")
    p.add_argument("--random-backbone", action="store_true",
                   help="a seeded random frozen backbone instead of the config's pretrained one (for comparison)")
    p.add_argument("--anatomies", nargs="+", choices=ANATOMIES, default=list(d.anatomies),
                   help="head anatomies of the medical training pairs (default: both)")
    p.add_argument(
        "--threads", type=whole_number("--threads", 0), default=d.threads, help="torch threads (0: torch's default)"
    )
    p.add_argument("--device", default=d.device, help="cpu (default) or cuda / cuda:N (bf16 autocast there too)")
    p.add_argument("--workers", type=whole_number("--workers", 0), default=d.workers,
                   help="processes that generate training pairs ahead (default 0; the stream is the same for any number)")
    p.add_argument("--time-limit", type=whole_number("--time-limit", 0), default=0, metavar="SECONDS",
                   help="stop after this many seconds of training and save (default: no limit; the schedule follows "
                   "--steps / --schedule-steps)")
    p.add_argument("--save-every", type=whole_number("--save-every"), default=d.save_every)
    p.add_argument("--log-every", type=whole_number("--log-every"), default=d.log_every)
    return p


def run(args: argparse.Namespace) -> int:
    from ..model.checkpoint.weights import bundled_weights
    from ..training.loop import TrainSettings, train

    settings = TrainSettings(
        config=args.config,
        steps=args.steps,
        schedule_steps=args.schedule_steps,
        batch_size=args.batch_size,
        crop=args.crop,
        lr=args.lr,
        seed=args.seed,
        precision=args.precision,
        loss=args.loss,
        init_from=str(bundled_weights("small")) if args.init_from == "bundled" else args.init_from,
        random_backbone=args.random_backbone,
        anatomies=tuple(args.anatomies),
        threads=args.threads,
        device=args.device,
        workers=args.workers,
        time_limit=args.time_limit,
        save_every=args.save_every,
        log_every=args.log_every,
        clip_weights=str(args.clip_weights) if args.clip_weights is not None else None,
    )
    path = train(args.out_dir, settings)
    print(f"wrote {path}")
    return 0
