"""Evaluate fusers on the development pairs and write the model card's table and montages.

    python benchmarks/eval_model_card.py --eval ../shared/eval --out docs/model-card --fuser small

For each of MRI_CT (MRI with CT), MRI_SPECT (MRI with pseudo-colour SPECT, fused on Y) and TNO
(visible with infrared) it prints and writes ``results.md`` (every metric, the chosen fusers next
to the classical ones) and ``results.json``, and a montage per dataset of a few fused results
(inputs are not reproduced: the evaluation pairs stay outside the repository).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from napari_upfusion import get_engine, read_image
from napari_upfusion.evaluation.evaluate import evaluate_pairs, format_table, matched_pairs
from napari_upfusion.evaluation.report import montage

SETS = {
    "MRI_CT": ("MRI", "CT", ("MRI", "CT")),
    "MRI_SPECT": ("MRI", "SPECT", ("MRI", "SPECT")),
    "TNO": ("vi", "ir", ("VIS", "IR")),
}
CLASSICAL = ["average", "maximum", "laplacian"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "eval")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--fuser", action="append", default=None, help="fuser(s) to score beside the classical ones")
    parser.add_argument("--examples", type=int, default=3, help="fused examples per dataset in the montage")
    args = parser.parse_args(argv)
    fusers = (args.fuser or ["small"]) + CLASSICAL
    args.out.mkdir(parents=True, exist_ok=True)
    report, lines = {}, []
    for name, (a_dir, b_dir, modalities) in SETS.items():
        a_path, b_path = args.eval / name / a_dir, args.eval / name / b_dir
        results = evaluate_pairs(a_path, b_path, fusers, modalities=modalities)
        report[name] = results
        table = format_table(results)
        count = len(matched_pairs(a_path, b_path))
        lines += [f"### {name} ({count} pairs, {modalities[0]} + {modalities[1]})", "", "```", table, "```", ""]
        print(f"== {name}\n{table}\n", file=sys.stderr)
        rows = []
        for file_name in matched_pairs(a_path, b_path)[:: max(1, count // args.examples)][: args.examples]:
            a, b = read_image(a_path / file_name), read_image(b_path / file_name)
            rows.append([get_engine(f, device="cpu").fuse(a, b, modalities=modalities).image.array for f in fusers])
        step = max(1, max(r[0].shape[0] for r in rows) // 256)
        iio.imwrite(args.out / f"{name}.png", montage([[np.asarray(p)[::step, ::step] for p in row] for row in rows]))
    (args.out / "results.md").write_text("\n".join(lines), encoding="utf-8")
    (args.out / "results.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
