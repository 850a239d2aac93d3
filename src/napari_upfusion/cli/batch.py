"""``upfusion batch MANIFEST --out DIR``: fuse every pair a CSV manifest lists, resumably.

    upfusion batch cohort.csv --out fused/ [--model small] [--device auto] [--format dicom]
                   [--scheduler tcp://host:8786 | --local-workers N] [--force]

No logic here beyond printing: see :mod:`napari_upfusion.batch.cohort` for the
manifest format, output names, resuming and the Dask options.  Exit status: 0
when no pair failed, 1 when some did (their reasons are in the summary and
the JSON report), 2 for a problem that stops the batch (bad manifest, model, a
full disk), 130 when interrupted with Ctrl-C, 143 with SIGTERM and 129 when the
terminal hangs up (run the same command again to resume; ``nohup`` keeps a batch going).
"""

from __future__ import annotations

import argparse
import sys

from .options import add_engine_options, add_output_format, engine_options, output_format, path_argument, whole_number


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``batch`` sub-command."""
    parser = subparsers.add_parser(
        "batch",
        help="fuse every pair of a CSV manifest into a folder (resumable; local or on a Dask cluster)",
        description=(
            "Fuse the pairs listed in MANIFEST, a CSV file with columns a, b, modality_a, modality_b and optional "
            "prompt and id (paths may be relative to the CSV's folder). Each output is DIR/<id or a's name>_fused "
            "with a's format family (.nii.gz for NIfTI and DICOM), or a DICOM series folder with --format dicom, "
            "and a's geometry. Finished outputs are skipped, "
            "so running the same command again resumes an interrupted batch; failed pairs are reported and the "
            "batch goes on. A summary is printed and DIR/upfusion_batch_report.json records every pair."
        ),
    )
    parser.add_argument("manifest", metavar="MANIFEST", type=path_argument, help="CSV file listing the pairs")
    parser.add_argument("--out", required=True, type=path_argument, metavar="DIR", help="output folder (created if needed)")
    add_engine_options(parser, "model", "device", "precision", "batch_size", "cpu_path")  # auto: CUDA where a worker has it
    parser.add_argument("--axis", type=int, default=0, help="slicing axis of the volumes (default 0)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="ADDRESS", help="run on the Dask cluster of this scheduler "
                       "(e.g. tcp://10.0.0.5:8786); paths must be valid on its workers")
    where.add_argument("--local-workers", type=whole_number("--local-workers"), metavar="N", help="run on a local cluster of N worker processes "
                       "(default: one after the other in this process)")
    add_output_format(parser, "each output keeps a's format family")
    parser.add_argument("--force", action="store_true", help="fuse pairs again even if their output exists")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the summary")
    parser.set_defaults(_interrupted="finished outputs are kept and {out}/upfusion_batch_report.json records them; "
                        "run the same command again to resume.")  # fmt: skip
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the batch, print one line per pair and the summary; returns the exit status."""
    from ..batch.cohort import EngineSettings, PairOutcome, format_summary, run_cohort

    settings = EngineSettings(**engine_options(args).as_kwargs(), axis=args.axis)

    def on_outcome(outcome: PairOutcome, report) -> None:
        if args.quiet:
            return
        finished = sum(o.status in ("done", "failed") for o in report.outcomes)
        total = sum(o.status != "skipped" for o in report.outcomes)
        detail = str(outcome.pair.output) if outcome.status == "done" else outcome.reason
        print(f"[{finished}/{total}] {outcome.status:<6} {outcome.pair.id} ({outcome.seconds:.1f} s): {detail}",
              flush=True)

    def on_warning(sentence: str) -> None:
        print(f"upfusion: warning: {sentence}", file=sys.stderr)

    report = run_cohort(
        args.manifest, args.out, settings=settings, scheduler=args.scheduler, local_workers=args.local_workers,
        force=args.force, on_outcome=on_outcome, on_warning=on_warning, output_format=output_format(args),
    )  # fmt: skip
    print(format_summary(report))
    return 1 if report.counts()["failed"] else 0
