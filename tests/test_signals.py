"""Issue 17, class 6: real signals sent to a real ``upfusion`` process at several moments (starting, fusing with CPU
stream threads, writing), and a low memory limit.  Every time: exit 130 for Ctrl-C and 143 for SIGTERM, one line,
no traceback, no ``terminate called without an active exception``, nothing left behind, inputs unchanged."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hostile import nifti, snapshot

pytestmark = pytest.mark.slow

SRC = str(Path(__file__).resolve().parents[1] / "src")


class _Upfusion:
    """``python -m napari_upfusion.cli ARGS`` with its stderr collected as it comes."""

    def __init__(self, args: list[str], cwd: Path, limit: int | None = None, hangup=signal.SIG_DFL,
                 group: bool = False) -> None:  # fmt: skip
        env = {**os.environ, "PYTHONPATH": SRC, "PYTHONUNBUFFERED": "1"}

        def preexec() -> None:  # SIGHUP as a terminal session gives it (or as nohup does), whatever the runner's is
            signal.signal(signal.SIGHUP, hangup)
            if limit:
                resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "napari_upfusion.cli", *map(str, args)], cwd=cwd, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=preexec, start_new_session=group,  # noqa: PLW1509 - sets a signal disposition and a limit only
        )  # fmt: skip
        self.err = bytearray()
        self.started = time.monotonic()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while chunk := self.process.stderr.read1(4096):
            self.err += chunk

    def wait_for(self, ready: Callable[[], bool], timeout: float = 240) -> None:
        while not ready():
            assert self.process.poll() is None, f"it ended before the moment came: {self.err.decode(errors='replace')}"
            assert time.monotonic() - self.started < timeout, "the moment never came"
            time.sleep(0.01)

    def finish(self, timeout: float = 240) -> tuple[int, str]:
        code = self.process.wait(timeout)
        self.reader.join(10)
        return code, self.err.decode(errors="replace")


@pytest.fixture(scope="module")
def volumes(tmp_path_factory) -> Path:
    """A pair the small network takes several seconds to fuse on two busy CPU cores, with a slow-to-write result."""
    folder = tmp_path_factory.mktemp("signals")
    rng = np.random.default_rng(6)
    nifti(folder / "a.nii.gz", (rng.random((96, 96, 48)) * 800).astype(np.int16))
    nifti(folder / "b.nii.gz", (rng.random((96, 96, 48)) * 5).astype(np.float32))
    nifti(folder / "big_a.nii.gz", (rng.random((256, 256, 160)) * 800).astype(np.int16))
    nifti(folder / "big_b.nii.gz", (rng.random((256, 256, 160)) * 5).astype(np.float32))
    return folder


def _check(code: int, err: str, expected: int, out: Path, inputs: dict[str, str]) -> None:
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip()]
    assert code == expected, err
    assert "Traceback" not in err and "terminate called" not in err, err
    word = "terminated" if expected in (143, 129) else "interrupted"
    assert lines[-1].startswith(f"upfusion: {word}; "), lines[-1]
    assert not [p for p in out.iterdir() if "partial" in p.name or p.name.startswith("f.")], list(out.iterdir())
    assert {k: v for k, v in snapshot(out.parent / "in").items()} == inputs


@pytest.fixture()
def setup(volumes, tmp_path) -> tuple[Path, Path, dict[str, str]]:
    (tmp_path / "in").symlink_to(volumes, target_is_directory=True)
    out = tmp_path / "out"
    out.mkdir()
    return tmp_path, out, snapshot(tmp_path / "in")


@pytest.mark.parametrize("number, expected", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_while_the_network_runs_on_cpu_stream_threads(setup, number, expected):
    root, out, inputs = setup
    run = _Upfusion(["fuse", "in/a.nii.gz", "in/b.nii.gz", "-o", out / "f.nii.gz", "--model", "small",
                     "--device", "cpu"], root)  # fmt: skip
    run.wait_for(lambda: b"slice/s" in run.err or b"s/slice" in run.err)  # the bar moves: the streams are fusing
    run.process.send_signal(number)
    _check(*run.finish(), expected, out, inputs)


@pytest.mark.parametrize("delay", [1.0, 2.5])
def test_ctrl_c_while_starting(setup, delay):
    """While torch and the model load (the first seconds): no traceback from inside an import."""
    root, out, inputs = setup
    run = _Upfusion(["fuse", "in/a.nii.gz", "in/b.nii.gz", "-o", out / "f.nii.gz", "--model", "small"], root)
    time.sleep(delay)
    run.process.send_signal(signal.SIGINT)
    _check(*run.finish(), 130, out, inputs)


@pytest.mark.parametrize("number, expected", [(signal.SIGTERM, 143), (signal.SIGINT, 130), (signal.SIGHUP, 129)])
def test_a_signal_while_the_output_is_written_leaves_no_partial_folder(setup, number, expected):
    """SIGHUP: the terminal or SSH session went away (it used to kill the process and leave the hidden staging file)."""
    root, out, inputs = setup
    run = _Upfusion(["fuse", "in/big_a.nii.gz", "in/big_b.nii.gz", "-o", out / "f.nii.gz", "--model", "average", "-q"],
                    root)  # fmt: skip
    run.wait_for(lambda: any(p.name.endswith(".partial") for p in out.iterdir()))
    run.process.send_signal(number)
    _check(*run.finish(), expected, out, inputs)


def test_sigterm_during_a_batch_marks_its_report_interrupted(setup):
    root, out, _ = setup
    manifest = root / "cohort.csv"
    manifest.write_text("a,b,modality_a,modality_b,id\nin/a.nii.gz,in/b.nii.gz,MRI,PET,one\n")
    run = _Upfusion(["batch", manifest, "--out", out, "--model", "small", "--device", "cpu"], root)
    run.wait_for(lambda: (out / "upfusion_batch_report.json").is_file())
    time.sleep(1.0)
    run.process.send_signal(signal.SIGTERM)
    code, err = run.finish()
    assert code == 143 and "Traceback" not in err and "terminate called" not in err, err
    assert err.strip().splitlines()[-1].startswith("upfusion: terminated; finished outputs are kept")
    report = json.loads((out / "upfusion_batch_report.json").read_text())
    assert report["state"] == "interrupted"
    assert not [p for p in out.iterdir() if "partial" in p.name]


def test_a_low_memory_limit_is_one_sentence(setup):
    """``ulimit -v`` too low for PyTorch: its libraries cannot be mapped when it is imported."""
    root, out, _ = setup
    run = _Upfusion(["fuse", "in/a.nii.gz", "in/b.nii.gz", "-o", out / "f.nii.gz"], root, limit=1 << 30)
    code, err = run.finish()
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("upfusion: error: This process ran out of memory (a memory limit "
                                                   "such as `ulimit -v` may be too low"), err  # fmt: skip
    assert not list(out.iterdir())


def test_an_interrupt_that_ended_code_run_from_source_text_still_exits_130(tmp_path):
    """The CI failure of stop 20 (exit -2 instead of 130): Ctrl-C arrived while torch's import ran ``exec`` of source
    text (dataclasses, namedtuple); CPython then killed the ``python -m`` process with SIGINT at exit even though the
    command had handled the interrupt.  Made certain here: the command's work is an ``exec`` that is interrupted."""
    (tmp_path / "probe.py").write_text(
        "import sys\n"
        "import napari_upfusion.cli as cli\n"
        "import napari_upfusion.cli.fuse as command\n"
        "command.run = lambda args: exec('raise KeyboardInterrupt')\n"
        "sys.exit(cli.main(['fuse', 'a.nii.gz', 'b.nii.gz', '-o', 'f.nii.gz']))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, str(tmp_path)])}
    done = subprocess.run([sys.executable, "-m", "probe"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          check=False)  # fmt: skip
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip() == "upfusion: interrupted; no file was left half-written.", done.stderr


def test_output_into_a_pipe_whose_reader_has_gone_stops_quietly():
    """``upfusion info | head -1``: the reader may go before everything is written.  That used to be called "The
    operating system refused to use the file (Broken pipe); check the path…", exit 2.  Made certain here: the
    reading end is closed before the command starts.  Exit 141 (128 + SIGPIPE, as a shell reports for
    ``yes | head``), nothing on stderr."""
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run([sys.executable, "-m", "napari_upfusion.cli", "info"], stdout=write, stderr=subprocess.PIPE,
                              env={**os.environ, "PYTHONPATH": SRC}, text=True, timeout=120, check=False)  # fmt: skip
    finally:
        os.close(write)
    assert done.returncode == 128 + signal.SIGPIPE and done.stderr == "", (done.returncode, done.stderr)


def test_nohup_keeps_a_hangup_ignored(setup):
    """``nohup upfusion …``: the hang-up that nohup ignores must not stop the command."""
    root, out, inputs = setup
    run = _Upfusion(["fuse", "in/big_a.nii.gz", "in/big_b.nii.gz", "-o", out / "f.nii.gz", "--model", "average", "-q"],
                    root, hangup=signal.SIG_IGN)  # fmt: skip
    run.wait_for(lambda: any(p.name.endswith(".partial") for p in out.iterdir()))
    run.process.send_signal(signal.SIGHUP)
    code, err = run.finish()
    assert code == 0 and "Traceback" not in err, err
    assert [p.name for p in out.iterdir()] == ["f.nii.gz"]
    assert snapshot(root / "in") == inputs


@pytest.mark.parametrize("number, expected", [(signal.SIGINT, 130), (signal.SIGHUP, 129)])
def test_a_terminal_signal_to_a_batch_on_local_workers(setup, number, expected):
    """Ctrl-C at a terminal, or a hang-up, reaches every process of the group, the Dask worker processes too: each
    worker used to print a KeyboardInterrupt traceback, and on a hang-up the workers died with their outputs
    half-written (hidden ``.partial`` files left) and multiprocessing's resource tracker with them (a KeyError
    traceback per shared-memory name)."""
    root, out, inputs = setup
    manifest = root / "cohort.csv"
    rows = "".join(f"in/big_a.nii.gz,in/big_b.nii.gz,MRI,CT,p{i}\n" for i in range(6))
    manifest.write_text("a,b,modality_a,modality_b,id\n" + rows)
    run = _Upfusion(["batch", manifest, "--out", out, "--model", "average", "--local-workers", "2", "-q"], root,
                    group=True)  # fmt: skip
    run.wait_for(lambda: any(p.name.endswith(".partial") for p in out.iterdir()))
    os.killpg(run.process.pid, number)
    code, err = run.finish()
    assert code == expected and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith(f"upfusion: {'interrupted' if expected == 130 else 'terminated'}; ")
    assert not [p for p in out.iterdir() if "partial" in p.name], list(out.iterdir())
    assert json.loads((out / "upfusion_batch_report.json").read_text())["state"] == "interrupted"
    assert snapshot(root / "in") == inputs
