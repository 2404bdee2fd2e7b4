"""The sandbox's pieces on their own: sizes, limits, the watchdog, and what bwrap lets through.

The whole sandbox, with nbgrader and hostile submissions, is tested in ``test_autograde.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from cs_dense.course.sandbox import JobSandbox, Limits, SandboxUnavailable, Watchdog, find_bwrap, parse_size


def test_sizes_parse_with_binary_units():
    assert parse_size("4G") == 4 << 30
    assert parse_size("512M") == parse_size("512MiB") == 512 << 20
    assert parse_size("1.5g") == 3 << 29
    assert parse_size("1000") == 1000
    for bad in ("", "lots", "-1G", "0"):
        with pytest.raises(ValueError, match="size"):
            parse_size(bad)


def test_limits_refuse_nonsense():
    with pytest.raises(ValueError, match="pids"):
        Limits(pids=0)
    with pytest.raises(ValueError, match="512 MiB"):
        Limits(memory=100 << 20)


def test_watchdog_kills_a_tree_past_its_memory_limit():
    hog = "x = bytearray(900 << 20); import time; time.sleep(60)"
    parent = subprocess.Popen(["/bin/sh", "-c", f'"{sys.executable}" -c "{hog}"; echo done'])
    watchdog = Watchdog(parent.pid, Limits(memory=600 << 20), interval=0.1)
    watchdog.start()
    try:
        assert parent.wait(timeout=30) == 0  # the shell ends only once its child is killed
        assert watchdog.reason == "memory"
    finally:
        watchdog.stop()
        parent.kill()


def test_watchdog_leaves_a_small_tree_alone():
    parent = subprocess.Popen(["/bin/sh", "-c", "sleep 2"])
    watchdog = Watchdog(parent.pid, Limits(), interval=0.1)
    watchdog.start()
    assert parent.wait(timeout=10) == 0
    watchdog.stop()
    assert watchdog.reason is None


def _sandbox_run(tmp_path, code: str) -> subprocess.CompletedProcess:
    """Run ``python -c code`` with the kernel's sandbox command line (the kernel's python, no cgroups)."""
    try:
        bwrap = find_bwrap()
    except SandboxUnavailable as error:
        pytest.skip(str(error))
    box = JobSandbox(tmp_path, tmp_path, Limits(), bwrap, {"CS_DENSE_DATA": str(tmp_path)})
    argv = box.argv()
    start = argv.index("--", argv.index(bwrap)) + 1
    argv = argv[:start] + [argv[start], "-c", code]
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=60)
    finally:
        box.__exit__(None, None, None)


def test_the_sandbox_hides_the_host(tmp_path):
    (tmp_path / "secret.txt").write_text("the answers")
    code = (
        "import os, socket\n"
        "print(os.getuid(), sorted(p for p in os.listdir('/proc') if p.isdigit()))\n"
        f"print(os.path.exists({str(tmp_path / 'secret.txt')!r}), os.path.exists('/etc/passwd'), os.getcwd())\n"
        "print(open('/proc/self/status').read().split('CapEff:')[1].split()[0])\n"
        "print(open('/proc/self/status').read().split('NoNewPrivs:')[1].split()[0])\n"
        "for path in ('/usr/evil', '/etc/evil', '/evil'):\n"
        "    try:\n        open(path, 'w')\n    except OSError as error:\n        print('ro', error.errno)\n"
        "try:\n    socket.getaddrinfo('pypi.org', 443)\nexcept OSError:\n    print('no dns')\n"
    )
    result = _sandbox_run(tmp_path, code)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "1000 ['1', '2']"  # bwrap's init and this process, nothing of the host
    assert lines[1] == "False False /home/student"
    assert lines[2] == "0000000000000000"  # no capabilities
    assert lines[3] == "1"  # no_new_privs
    assert lines[4:7] == ["ro 30"] * 3  # EROFS, in /usr and in the sandbox's own root
    assert lines[7] == "no dns"


def test_the_kernel_starts_when_the_grader_was_started_by_a_roundabout_path(tmp_path, monkeypatch):
    # `../.venv/bin/python grade.py` from benchmarks/: a path through folders the sandbox does not hold
    outside = Path(tempfile.mkdtemp())  # under the host's /tmp, which the sandbox replaces
    try:
        up = "/..".join([""] * len(outside.parts))
        roundabout = f"{outside}{up}{os.path.dirname(sys.executable)}/{os.path.basename(sys.executable)}"
        assert os.path.samefile(roundabout, sys.executable) and ".." in roundabout
        monkeypatch.setattr(sys, "executable", roundabout)
        result = _sandbox_run(tmp_path, "import sys; print(sys.prefix)")
    finally:
        outside.rmdir()
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == os.path.realpath(sys.prefix)
