"""Output paths, atomic writes and interrupts (issue 15, items 1-3).

Every output is checked before any work: an existing regular file (replaced atomically) or
a new file in an existing, writable directory. A device, FIFO, socket, directory, a path
under a file or a missing directory, a name too long, an input of the command, or another
output of the command is refused with exit status 2 and one line, and nothing is created,
changed or removed. SIGINT / SIGTERM at any moment: exit 130 / 143, one line, no
temporary file, no partial output. Device nodes are made in the test's own directory (the
tests run as root in CI: never point them at /dev).
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import snnc
from snnc.cli import main
from snnc.errors import DataError

WIDE = {"COLUMNS": "240"}
SNNC = [sys.executable, "-m", "snnc"]
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A small CNN (ONNX), its calibration data, and a converted artifact, in a read-only place."""
    import torch
    import torch.nn as nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8 * 4 * 4, 10)).eval()
    d = tmp_path_factory.mktemp("tiny")
    onnx_path = d / "m.onnx"
    torch.onnx.export(
        net, torch.zeros(1, 1, 8, 8), str(onnx_path), dynamo=False, opset_version=17,
        input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "b"}, "y": {0: "b"}},
    )  # fmt: skip
    x = np.random.default_rng(0).random((32, 1, 8, 8), dtype=np.float32)
    np.savez(d / "calib.npz", x=x)
    np.savez(d / "data.npz", x=x[:8], y=np.arange(8) % 10)
    sm = snnc.convert(str(onnx_path), x, timesteps=4, calibration="none")
    sm.save(d / "m.snn")
    return d


@pytest.fixture
def work(tmp_path, tiny):
    """A fresh directory holding copies of the inputs, a device node, a FIFO, a socket, a
    directory and a plain file: the things outputs get pointed at."""
    for name in ("m.onnx", "calib.npz", "data.npz", "m.snn"):
        (tmp_path / name).write_bytes((tiny / name).read_bytes())
    if IS_ROOT:
        os.mknod(tmp_path / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mkfifo(tmp_path / "fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "sock"))
    (tmp_path / "dir").mkdir()
    (tmp_path / "afile").write_text("a file\n")
    os.link(tmp_path / "m.onnx", tmp_path / "hardlink.onnx")
    (tmp_path / "link-to-model").symlink_to("m.onnx")
    if IS_ROOT:
        (tmp_path / "link-to-null").symlink_to("null")
    yield tmp_path
    sock.close()


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under ``root`` (not following links): type, size, mtime, device number, link target."""
    snap = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = os.lstat(p)
            snap[str(p.relative_to(root))] = (
                stat.S_IFMT(st.st_mode), st.st_size, st.st_mtime_ns, st.st_rdev, os.readlink(p) if p.is_symlink() else None,
            )  # fmt: skip
    return snap


def invoke(cwd: Path, *args) -> tuple[int, str]:
    cur = os.getcwd()
    os.chdir(cwd)
    try:
        res = CliRunner(env=WIDE).invoke(main, [str(a) for a in args])
    finally:
        os.chdir(cur)
    assert not isinstance(res.exception, Exception) or isinstance(res.exception, SystemExit), res.exception
    return res.exit_code, res.stderr


def one_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


# ------------------------------------------------------------ golden cases
CONVERT = ("convert", "m.onnx", "--calib", "calib.npz", "-T", "4", "--calibration", "none", "--no-progress")
LONG = "x" * 300 + ".snn"

CASES = [
    # (command line, expected words of the one-line message)
    pytest.param((*CONVERT, "-o", "null"), "'null' is a character device, not a regular file", id="convert-o-device", marks=pytest.mark.skipif(not IS_ROOT, reason="mknod needs root")),
    pytest.param((*CONVERT, "-o", "link-to-null"), "is a character device", id="convert-o-link-to-device", marks=pytest.mark.skipif(not IS_ROOT, reason="mknod needs root")),
    pytest.param((*CONVERT, "-o", "fifo"), "'fifo' is a FIFO (named pipe), not a regular file", id="convert-o-fifo"),
    pytest.param((*CONVERT, "-o", "sock"), "'sock' is a socket, not a regular file", id="convert-o-socket"),
    pytest.param((*CONVERT, "-o", "newdir/"), "names a directory; give a file name", id="convert-o-trailing-slash"),
    pytest.param((*CONVERT, "-o", "afile/m.snn"), "'afile' is a regular file, not a directory", id="convert-o-parent-is-file"),
    pytest.param((*CONVERT, "-o", "afile/sub/m.snn"), "'afile/sub' is not a directory (a file is in the way)", id="convert-o-grandparent-is-file"),
    pytest.param((*CONVERT, "-o", "missing/m.snn"), "directory 'missing' does not exist; create it first", id="convert-o-parent-missing"),
    pytest.param((*CONVERT, "-o", LONG), "bytes long; the file system allows", id="convert-o-name-too-long"),
    pytest.param((*CONVERT, "-o", ""), "-o is an empty path", id="convert-o-empty"),
    pytest.param((*CONVERT, "-o", "m.onnx"), "-o 'm.onnx' is the input model; write the output to another file", id="convert-o-is-model"),
    pytest.param((*CONVERT, "-o", "./hardlink.onnx"), "is the input model", id="convert-o-hardlink-of-model"),
    pytest.param((*CONVERT, "-o", "link-to-model"), "is the input model", id="convert-o-symlink-to-model"),
    pytest.param((*CONVERT, "-o", "calib.npz"), "is the calibration file", id="convert-o-is-calib"),
    pytest.param((*CONVERT, "-o", "new.snn", "--report", "new.snn"), "--report 'new.snn' is the same file as -o", id="convert-report-is-o"),
    pytest.param((*CONVERT, "-o", "new.snn", "--report", "./new.snn"), "is the same file as -o", id="convert-report-is-o-spelled-differently"),
    pytest.param((*CONVERT, "-o", "new.snn", "--report", "fifo"), "--report 'fifo' is a FIFO", id="convert-report-fifo"),
    pytest.param((*CONVERT, "-o", "new.snn", "--report", "missing/r.json"), "directory 'missing' does not exist", id="convert-report-parent-missing"),
    pytest.param((*CONVERT, "-o", "new.snn", "--report", "m.onnx"), "--report 'm.onnx' is the input model", id="convert-report-is-model"),
    pytest.param(("calibrate", "m.snn", "--calib", "calib.npz", "-o", "m.snn", "--no-progress"), "-o 'm.snn' is the artifact being calibrated", id="calibrate-o-is-artifact"),
    pytest.param(("calibrate", "m.snn", "--calib", "calib.npz", "-o", "new.snn", "--report", "fifo", "--no-progress"), "--report 'fifo' is a FIFO", id="calibrate-report-fifo"),
    pytest.param(("run", "m.snn", "--input", "data.npz", "-o", "fifo", "--no-progress"), "-o 'fifo' is a FIFO", id="run-o-fifo"),
    pytest.param(("run", "m.snn", "--input", "data.npz", "-o", "null", "--no-progress"), "is a character device", id="run-o-device", marks=pytest.mark.skipif(not IS_ROOT, reason="mknod needs root")),
    pytest.param(("run", "m.snn", "--input", "data.npz", "-o", "data.npz", "--no-progress"), "-o 'data.npz' is the input file", id="run-o-is-input"),
    pytest.param(("run", "m.snn", "--input", "data.npz", "-o", "m.snn", "--no-progress"), "-o 'm.snn' is the artifact", id="run-o-is-artifact"),
    pytest.param(("export", "m.snn", "-o", "sock"), "-o 'sock' is a socket", id="export-o-socket"),
    pytest.param(("export", "m.snn", "-o", "m.snn"), "is the artifact being exported", id="export-o-is-artifact"),
    pytest.param(("export", "m.snn", "-o", "missing/m.nir"), "directory 'missing' does not exist", id="export-o-parent-missing"),
    pytest.param(("report", "m.snn", "--data", "data.npz", "-o", "fifo", "--no-progress"), "exists and is a FIFO (named pipe), not a directory", id="report-o-fifo"),
    pytest.param(("report", "m.snn", "--data", "data.npz", "-o", "missing/r", "--no-progress"), "directory 'missing' does not exist", id="report-o-parent-missing"),
    pytest.param(("report", "m.snn", "--data", "data.npz", "-o", "afile/r", "--no-progress"), "'afile' is a regular file, not a directory", id="report-o-parent-is-file"),
]


@pytest.mark.parametrize("args, message", CASES)
def test_bad_output_is_refused_before_any_work_and_nothing_changes(work, args, message):
    before = snapshot(work)
    t0 = time.perf_counter()
    code, stderr = invoke(work, *args)
    line = one_line(stderr)
    assert code == 2, stderr
    assert line.startswith("error: ") and message in line, line
    assert snapshot(work) == before
    assert time.perf_counter() - t0 < 5  # refused at the start, not after the work


def test_a_device_inside_the_report_directory_is_refused(work):
    os.mkfifo(work / "dir" / "index.html")
    before = snapshot(work)
    code, stderr = invoke(work, "report", "m.snn", "--data", "data.npz", "-o", "dir", "--no-progress")
    assert code == 2 and "'dir/index.html' is a FIFO (named pipe), not a regular file" in one_line(stderr)
    assert snapshot(work) == before


def test_directory_output_is_refused_by_the_option_type(work):
    """``-o DIR`` for a file output: click's own check (exit 2) before any work."""
    before = snapshot(work)
    code, stderr = invoke(work, *CONVERT, "-o", "dir")
    assert code == 2 and "is a directory" in stderr and "Traceback" not in stderr
    assert snapshot(work) == before


def test_unwritable_directory_is_refused(work, monkeypatch):
    """As root every directory is writable: simulate a read-only one through os.access."""
    import snnc.utils.paths as paths

    real = os.access
    monkeypatch.setattr(paths.os, "access", lambda p, mode, **k: False if mode & os.W_OK else real(p, mode, **k))
    before = snapshot(work)
    code, stderr = invoke(work, *CONVERT, "-o", "new.snn")
    assert code == 2 and "directory '.' is not writable; choose another location" in one_line(stderr)
    assert snapshot(work) == before


@pytest.mark.parametrize("err, words", [(errno.ENOSPC, "the disk is full"), (errno.EACCES, "permission denied"), (errno.EROFS, "read-only")])
def test_write_failure_leaves_nothing(work, monkeypatch, err, words):
    """A failure while writing (full disk, ...) happens late by nature: one line, exit 2,
    no temporary file, and neither the artifact nor the report (all or nothing)."""
    real = os.fsync
    calls = []

    def failing_fsync(fd):
        calls.append(fd)
        if len(calls) == 2:  # the report, after the artifact was written (staged)
            raise OSError(err, os.strerror(err))
        return real(fd)

    monkeypatch.setattr(os, "fsync", failing_fsync)
    before = snapshot(work)
    code, stderr = invoke(work, *CONVERT, "-o", "new.snn", "--report", "new.json")
    line = one_line(stderr)
    assert code == 2 and "cannot write 'new.json'" in line and words in line and "nothing was written" in line, line
    assert snapshot(work) == before


def test_outputs_are_written_together(work):
    code, stderr = invoke(work, *CONVERT, "-o", "afile", "--report", "r.json")
    assert code == 0, stderr
    assert snnc.load(work / "afile").timesteps == 4  # an existing regular file is replaced
    assert (work / "r.json").exists()
    assert not list(work.glob(".*.tmp"))


# ------------------------------------------------------ the library helpers
def test_atomic_write_refuses_non_regular_files(work):
    from snnc.utils.io import atomic_write

    targets = ["fifo", "sock", "dir"] + (["null", "link-to-null"] if IS_ROOT else [])
    before = snapshot(work)
    for name in targets:
        with pytest.raises(DataError, match="not a regular file"):
            with atomic_write(work / name) as fh:
                fh.write(b"x")
    assert snapshot(work) == before


def test_atomic_write_turns_oserrors_into_one_line(work):
    from snnc.utils.io import atomic_write

    before = snapshot(work)
    with pytest.raises(DataError, match="name is too long"):
        with atomic_write(work / LONG) as fh:
            fh.write(b"x")
    with pytest.raises(DataError, match="a file is in the way"):
        with atomic_write(work / "afile" / "x") as fh:
            fh.write(b"x")
    assert snapshot(work) == before


def test_api_outputs_are_checked(work):
    from snnc.analysis.report import write_report
    from snnc.export import export_nir

    sm = snnc.load(work / "m.snn")
    before = snapshot(work)
    with pytest.raises(DataError, match="is a directory"):
        sm.save(work / "dir")
    with pytest.raises(DataError, match="is a FIFO"):
        sm.save(work / "fifo")
    with pytest.raises(DataError, match="is a socket"):
        export_nir(sm, work / "sock")
    with pytest.raises(DataError, match="is the artifact being exported"):
        export_nir(str(work / "m.snn"), work / "m.snn")
    with pytest.raises(DataError, match="not a directory"):
        write_report({}, work / "fifo")
    assert snapshot(work) == before
    sm.save(work / "new" / "m.snn")  # the API creates missing directories, as it always has
    assert snnc.load(work / "new" / "m.snn").timesteps == 4


def test_deferred_holds_a_signal_until_the_block_ends():
    from snnc.utils import interrupts

    old = {s: signal.getsignal(s) for s in interrupts.HANDLED}
    try:
        interrupts.install()
        done = []
        with pytest.raises(interrupts.Interrupted) as info:
            with interrupts.deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)
                done.append(True)
        assert done and info.value.exit_code == 143
    finally:
        for s, h in old.items():
            signal.signal(s, h)


# ------------------------------------------------------------- interrupts
# Runs `snnc` in a process whose os.fsync (called only by atomic_write, once a temporary
# file is complete) marks that the save has begun and then waits to be interrupted; or
# (which=0) whose conversion does so at its first progress step.
HARNESS = """
import os, sys, time
from pathlib import Path
marker, which = Path(sys.argv[1]), int(sys.argv[2])
calls, real = [], os.fsync
def fsync(fd):
    calls.append(fd)
    if len(calls) == which:
        marker.touch()
        time.sleep(60)
    return real(fd)
if which:
    os.fsync = fsync
else:  # mid-conversion: the first time the conversion reports progress (a batch done)
    import snnc.api
    convert = snnc.api.convert
    class Task:
        def __enter__(self):
            return self
        def __exit__(self, *exc):
            return False
        def advance(self, n=1):
            marker.touch()
            time.sleep(60)
    def marked(*a, **k):
        k["progress"] = lambda description, total: Task()
        return convert(*a, **k)
    snnc.api.convert = marked
sys.argv = ["snnc", *sys.argv[3:]]
from snnc.__main__ import main
main()
"""


def _wait_for_sigterm_handler(p: subprocess.Popen) -> None:
    """Until the process catches SIGTERM (snnc.__main__ installed its handlers: the heavy
    imports begin). Python itself catches only SIGINT at start-up."""
    status = Path(f"/proc/{p.pid}/status")
    deadline = time.monotonic() + 30
    while p.poll() is None and time.monotonic() < deadline:
        try:
            caught = int(next(ln for ln in status.read_text().splitlines() if ln.startswith("SigCgt:")).split()[1], 16)
        except (OSError, StopIteration):
            time.sleep(0.3)  # no /proc: the imports take well over a second
            return
        if caught & (1 << (signal.SIGTERM - 1)):
            return
        time.sleep(0.005)


def _interrupt(work: Path, sig: int, *, wait_for: str | None = None, which: int = 0) -> subprocess.CompletedProcess:
    marker = work.parent / f"{work.name}.marker"
    marker.unlink(missing_ok=True)
    args = [*CONVERT, "-o", "out.snn", "--report", "out.json"]
    if wait_for in (None, "handlers"):
        cmd = [*SNNC, *args]
    else:
        cmd = [sys.executable, "-c", HARNESS, str(marker), str(which), *args]
    # A test run started in the background of a non-interactive shell (`cmd &`, nohup) inherits
    # SIGINT ignored, and Python then keeps ignoring it: give the command the default disposition,
    # as an interactive user's would have.
    p = subprocess.Popen(
        cmd, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    if wait_for == "handlers":
        _wait_for_sigterm_handler(p)
    elif wait_for is not None:
        deadline = time.monotonic() + 60
        while not marker.exists() and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
    p.send_signal(sig)
    out, err = p.communicate(timeout=60)
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


def _assert_clean_interrupt(work: Path, res, sig: int, before) -> None:
    name = signal.Signals(sig).name
    assert res.returncode == 128 + sig, (res.returncode, res.stderr)
    assert one_line(res.stderr) == f"interrupted ({name}); no output written"
    assert snapshot(work) == before  # no temporary file, no partial output


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_interrupt_while_importing(work, sig):
    before = snapshot(work)
    res = _interrupt(work, sig, wait_for="handlers")  # then torch and friends take a second to import
    _assert_clean_interrupt(work, res, sig, before)


def test_interrupt_during_conversion(work):
    sig = signal.SIGTERM
    before = snapshot(work)
    res = _interrupt(work, sig, wait_for="convert")
    _assert_clean_interrupt(work, res, sig, before)


@pytest.mark.parametrize("sig, which", [(signal.SIGTERM, 1), (signal.SIGINT, 2)], ids=["SIGTERM-artifact", "SIGINT-report"])
def test_interrupt_during_save(work, sig, which):
    """which=1: while the artifact's temporary file is being finished; which=2: the artifact
    is complete (staged) and the report is being written: neither may remain."""
    before = snapshot(work)
    res = _interrupt(work, sig, wait_for="save", which=which)
    _assert_clean_interrupt(work, res, sig, before)


def test_torchs_cache_directory_stays_inside_snncs_own_temporary_files(tmp_path):
    """Importing torch._dynamo (which snnc's meta-tensor shape inference does, through
    torch.clamp's decomposition) makes torch create $TMPDIR/torchinductor_$USER: the CLI gives
    it a directory of its own, removed at exit, so $TMPDIR is left as it was."""
    code = (
        "import os, sys, torch\n"
        "from snnc.utils.scratch import private_torch_cache\n"
        "path = private_torch_cache()\n"
        "torch.clamp(torch.zeros(2, device='meta'), min=0.0)\n"
        "assert 'torch._dynamo' in sys.modules\n"
        "print(path, sorted(os.listdir(os.environ['TMPDIR'])))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CACHE_DIR"}
    for k in ("TMPDIR", "TEMP", "TMP"):
        env[k] = str(tmp_path)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    path, during = proc.stdout.split(" ", 1)
    assert Path(path).parent == tmp_path and Path(path).name in during  # torch's cache went there ...
    assert "torchinductor" not in during
    assert list(tmp_path.iterdir()) == []  # ... and is gone after the process
