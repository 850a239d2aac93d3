"""The command line answers at once: parsing (help, version, argument errors) imports nothing heavy."""

from __future__ import annotations

import subprocess
import sys

import pytest

from napari_upfusion.cli import COMMANDS

#: Modules that take seconds to import; none may be loaded before a command actually runs.
HEAVY = ("torch", "timm", "open_clip", "napari", "dask", "SimpleITK", "nibabel", "scipy", "skimage", "qtpy")

_PROBE = """
import sys
from napari_upfusion.cli import build_parser, main
build_parser()
try:
    main(sys.argv[1:])
except SystemExit as exit_:
    code = exit_.code
else:
    code = 'returned'
loaded = sorted(m for m in {heavy!r} if m in sys.modules)
print('EXIT', code, 'LOADED', ','.join(loaded) or '-', file=sys.stderr)
"""


def _probe(argv: list[str]) -> tuple[str, str]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE.format(heavy=HEAVY), *argv],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("EXIT "), done.stderr
    _, code, _, loaded = last.split()
    return code, loaded


@pytest.mark.parametrize(
    "argv, code",
    [
        (["--help"], "0"),
        (["--version"], "0"),
        *[([command.replace("_", "-"), "--help"], "0") for command in COMMANDS],
        (["fuse", "a.nii.gz", "b.nii.gz"], "2"),  # -o missing
        (["fuse", "a.nii.gz", "b.nii.gz", "-o", "f.nii.gz", "--modalities", "MRI", "XRAY"], "2"),
        (["train", "out", "--steps", "0"], "2"),
        (["no-such-command"], "2"),
    ],
)
def test_parsing_imports_nothing_heavy(argv, code):
    assert _probe(argv) == (code, "-")


def test_importtime_of_help_lists_no_torch():
    """The bar of the issue, as a user would check it: ``python -X importtime -m napari_upfusion.cli --help``."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "napari_upfusion.cli", "--help"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0 and "usage: upfusion" in done.stdout
    imported = {line.split("|")[-1].strip().split(".")[0] for line in done.stderr.splitlines() if "|" in line}
    assert "napari_upfusion" in imported  # the probe saw the package's own imports
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))
