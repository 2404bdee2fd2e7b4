"""A bubblewrap sandbox for each grading kernel, with memory and process limits.

Each submission's Python kernel runs under ``bwrap`` in namespaces of its own (user, pid,
network, IPC, mount, UTS, cgroup): uid 1000 without capabilities and with ``no_new_privs``,
no network at all (not even the host's loopback), and a file system made of read-only
binds of only what a notebook needs (the system's ``/usr``, the Python installation, the
virtual environment, the ``cs_dense`` package and ``data/`` without the sample
submissions) plus two size-capped private ``tmpfs`` (the working folder, which is also
``$HOME``, and ``/tmp``). Not there: ``solutions/``, the gradebook, the notebook file
nbgrader executes (it holds the hidden tests), other submissions, the grader's home.
The only folder shared with the grader holds the kernel's connection file and sockets.

Limits: memory and the number of tasks go through cgroup v1 controllers when this process
may create cgroups (root with the ``memory`` and ``pids`` hierarchies mounted, as on the
course machines); otherwise a watchdog thread sums the memory of the kernel's processes
twice a second and kills them past the limit. Everything in the sandbox dies with the
job: the pid namespace ends with the kernel, and every task left in the job's cgroups is
killed before they are removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil

import cs_dense

#: Kernel name of the sandboxed kernelspec each job writes.
KERNEL_NAME = "cs-dense-sandbox"
#: Inside the sandbox: the kernel's working folder (and ``$HOME``), a private tmpfs.
WORK = "/home/student"
#: The uid and gid the kernel has inside its user namespace.
SANDBOX_UID = 1000
INSTALL_HINT = "install bubblewrap (Debian/Ubuntu: sudo apt install bubblewrap)"


class SandboxUnavailable(RuntimeError):
    """bubblewrap is missing or cannot create namespaces on this machine."""


@dataclass(frozen=True)
class Limits:
    """What one grading job may use.

    Attributes:
        memory: bytes of memory for the kernel and everything it starts (tmpfs files count).
        pids: tasks (processes and threads) at once.
        disk: bytes of each private tmpfs (the working folder, ``/tmp``).
    """

    memory: int = 4 << 30
    pids: int = 512
    disk: int = 512 << 20

    def __post_init__(self) -> None:
        for name in ("memory", "pids", "disk"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"the {name} limit must be a positive integer, got {value!r}")
        if self.memory < 512 << 20:
            raise ValueError(f"a memory limit below 512 MiB cannot start a kernel with torch, got {self.memory} bytes")


def parse_size(text: str) -> int:
    """``"4G"``, ``"512M"``, ``"1.5G"`` or a number of bytes, as bytes."""
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    value = text.strip().upper().removesuffix("B").removesuffix("I")
    number, unit = (value[:-1], value[-1]) if value and value[-1] in units else (value, "")
    try:
        size = int(float(number) * units[unit])
    except ValueError:
        raise ValueError(f"not a size: {text!r} (use e.g. 4G, 512M or a number of bytes)") from None
    if size <= 0:
        raise ValueError(f"a size must be positive, got {text!r}")
    return size


def find_bwrap() -> str:
    """The path of a working ``bwrap``.

    Raises:
        SandboxUnavailable: it is not installed, or cannot make the namespaces here.
    """
    path = shutil.which("bwrap")
    if path is None:
        raise SandboxUnavailable(f"bubblewrap (bwrap) is not installed: {INSTALL_HINT}, or grade with --no-sandbox")
    probe = subprocess.run(
        [path, "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "true"],
        capture_output=True, text=True, timeout=30,
    )
    if probe.returncode != 0:
        raise SandboxUnavailable(
            f"bwrap cannot create namespaces on this machine ({probe.stderr.strip()[:200]}); "
            "unprivileged user namespaces must be enabled (sysctl user.max_user_namespaces > 0)"
        )
    return path


# --------------------------------------------------------------------------- cgroups


def _cgroup_v1_dir(controller: str) -> Path | None:
    """Where this process's cgroup of a v1 controller is, if we may create children in it."""
    mount = Path("/sys/fs/cgroup") / controller
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            folder = mount / path.lstrip("/")
            if (folder / "cgroup.procs").is_file() and os.access(folder, os.W_OK):
                return folder
    return None


class Cgroups:
    """A memory and a pids cgroup (v1) for one job: limits, what was hit, and a clean end."""

    def __init__(self, name: str, limits: Limits) -> None:
        memory_parent, pids_parent = _cgroup_v1_dir("memory"), _cgroup_v1_dir("pids")
        if memory_parent is None or pids_parent is None:
            raise OSError("no writable cgroup v1 memory and pids hierarchies")
        self.memory, self.pids = memory_parent / name, pids_parent / name
        self.memory.mkdir()
        self.pids.mkdir()
        (self.memory / "memory.limit_in_bytes").write_text(str(limits.memory))
        swap = self.memory / "memory.memsw.limit_in_bytes"
        if swap.exists():  # no swapping past the limit either
            swap.write_text(str(limits.memory))
        (self.pids / "pids.max").write_text(str(limits.pids))

    @property
    def procs_files(self) -> list[str]:
        return [str(self.memory / "cgroup.procs"), str(self.pids / "cgroup.procs")]

    def hit(self) -> str | None:
        """Which limit stopped the job, in plain words, or None."""
        control = dict(
            line.split() for line in (self.memory / "memory.oom_control").read_text().splitlines() if " " in line
        )
        if int(control.get("oom_kill", 0)) > 0:
            return "memory"
        events = dict(line.split() for line in (self.pids / "pids.events").read_text().splitlines())
        if int(events.get("max", 0)) > 0:
            return "pids"
        return None

    def close(self) -> None:
        """Kill every task left in the job's cgroups and remove them."""
        for folder in (self.memory, self.pids):
            for _ in range(100):
                pids = [int(p) for p in (folder / "cgroup.procs").read_text().split()]
                if not pids:
                    break
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                time.sleep(0.05)
            with contextlib.suppress(OSError):
                folder.rmdir()


class Watchdog(threading.Thread):
    """Without cgroups: poll the memory and task count of a process's descendants, kill past a limit."""

    def __init__(self, root_pid: int, limits: Limits, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.root_pid, self.limits, self.interval = root_pid, limits, interval
        self.reason: str | None = None
        self._stopped = threading.Event()  # not `_stop`: threading.Thread has a method of that name

    def run(self) -> None:
        while not self._stopped.wait(self.interval):
            try:
                family = psutil.Process(self.root_pid).children(recursive=True)
            except psutil.NoSuchProcess:
                return
            memory, tasks = 0, 0
            for process in family:
                with contextlib.suppress(psutil.Error):
                    memory += process.memory_info().rss
                    tasks += process.num_threads()
            reason = "memory" if memory > self.limits.memory else "pids" if tasks > self.limits.pids else None
            if reason:
                self.reason = reason
                for process in family:
                    with contextlib.suppress(psutil.Error):
                        process.kill()

    def stop(self) -> None:
        self._stopped.set()


# --------------------------------------------------------------------------- one job


def _python_roots() -> list[Path]:
    """Folders holding the Python installation and environment the kernel runs from."""
    paths = sysconfig.get_paths()
    roots = {Path(sys.prefix), Path(sys.base_prefix), Path(os.path.realpath(sys.executable)).parents[1]}
    roots |= {Path(paths[k]) for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    roots = {r.resolve() for r in roots if r.exists()}
    # keep the outermost folders only, and nothing already under /usr
    keep = [r for r in roots if not any(o != r and o in r.parents for o in roots)]
    return sorted(r for r in keep if Path("/usr") not in (r, *r.parents))


class JobSandbox:
    """The sandbox of one grading job: its kernelspec, its limits, its clean end.

    Use as a context manager around running nbgrader with :meth:`env`; then read
    :meth:`limit_hit`.
    """

    def __init__(self, folder: Path, course_root: Path, limits: Limits, bwrap: str, env: dict[str, str]) -> None:
        """``env``: variables the kernel gets besides the sandbox's own (its environment is cleared)."""
        self.folder, self.limits, self.bwrap = folder, limits, bwrap
        self.course_root, self.kernel_env = course_root, {"NBGRADER_EXECUTION": "autograde", **env}
        self.name = f"cs_dense_{uuid.uuid4().hex[:12]}"
        # The connection file and the sockets; on /dev/shm where there is one, so that a
        # kernel filling it fills its own memory limit, not the disk.
        shm = Path("/dev/shm")
        self.runtime = Path(tempfile.mkdtemp(prefix=f"{self.name}_", dir=shm if shm.is_dir() else folder))
        self.cgroups: Cgroups | None = None
        self.watchdog: Watchdog | None = None

    def __enter__(self) -> JobSandbox:
        with contextlib.suppress(OSError):
            self.cgroups = Cgroups(self.name, self.limits)
        spec = self.folder / "jupyter" / "kernels" / KERNEL_NAME
        spec.mkdir(parents=True)
        (spec / "kernel.json").write_text(json.dumps({
            "argv": self.argv(), "display_name": "Python 3 (cs_dense sandbox)", "language": "python",
            "interrupt_mode": "message", "metadata": {"debugger": False},
        }, indent=1))
        return self

    def env(self) -> dict[str, str]:
        """What nbgrader's environment needs so its kernel is this sandbox."""
        return {"JUPYTER_PATH": str(self.folder / "jupyter"), "JUPYTER_RUNTIME_DIR": str(self.runtime)}

    def argv(self) -> list[str]:
        """The kernel command: join the job's cgroups (if any), then bwrap, then ipykernel."""
        # the folder resolved (no `..`, no linked folder, which the sandbox may not hold), the file
        # not: a venv's python is a link whose own path says which environment it runs
        python = os.path.join(os.path.realpath(os.path.dirname(sys.executable)), os.path.basename(sys.executable))
        # the private tmpfs first: a bind under /tmp (a course or venv there) must go on top of it
        binds = ["--size", str(self.limits.disk), "--tmpfs", "/tmp", "--size", str(self.limits.disk), "--tmpfs", WORK,
                 "--ro-bind", "/usr", "/usr"]
        for name in ("bin", "lib", "lib32", "lib64", "sbin"):
            top = Path("/") / name
            if top.is_symlink():
                binds += ["--symlink", os.readlink(top), str(top)]
            elif top.is_dir():
                binds += ["--ro-bind", str(top), str(top)]
        for name in ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "nsswitch.conf"):
            if (Path("/etc") / name).exists():
                binds += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
        for root in _python_roots():
            binds += ["--ro-bind", str(root), str(root)]
        package = Path(cs_dense.__file__).resolve().parent
        binds += ["--ro-bind", str(package), str(package)]
        data = self.course_root / "data"
        if data.is_dir():
            binds += ["--ro-bind", str(data), str(data)]
            if (data / "samples").is_dir():  # the sample submissions include complete solutions
                binds += ["--tmpfs", str(data / "samples")]
        command = [
            self.bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
            "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--hostname", "grading",
            *binds,
            "--proc", "/proc", "--dev", "/dev",
            "--bind", str(self.runtime), str(self.runtime),
            "--remount-ro", "/",  # the sandbox's own root: no writable folders but those above
            "--chdir", WORK, "--clearenv",
            "--setenv", "HOME", WORK, "--setenv", "TMPDIR", "/tmp", "--setenv", "LANG", "C.UTF-8",
            "--setenv", "PATH", f"{Path(python).parent}:/usr/bin:/bin",
            "--setenv", "MPLCONFIGDIR", f"{WORK}/.matplotlib", "--setenv", "IPYTHONDIR", f"{WORK}/.ipython",
            "--setenv", "PYTHONDONTWRITEBYTECODE", "1",
            *[arg for name, value in self.kernel_env.items() for arg in ("--setenv", name, value)],
            "--", python, "-m", "ipykernel_launcher", "-f", "{connection_file}",
        ]
        if self.cgroups is None:
            return command
        # join the cgroups before bwrap starts, so that nothing it starts escapes them
        join = 'echo $$ > "$1" && echo $$ > "$2" && shift 2 && exec "$@"'
        return ["/bin/sh", "-c", join, "sh", *self.cgroups.procs_files, *command]

    def watch(self, nbgrader_pid: int) -> None:
        """Without cgroups, start the watchdog over the kernels nbgrader starts."""
        if self.cgroups is None:
            self.watchdog = Watchdog(nbgrader_pid, self.limits)
            self.watchdog.start()

    def limit_hit(self) -> str | None:
        """``"memory"`` or ``"pids"`` if the job was stopped by that limit."""
        if self.cgroups is not None:
            return self.cgroups.hit()
        return self.watchdog.reason if self.watchdog else None

    def __exit__(self, *exc) -> None:
        if self.watchdog is not None:
            self.watchdog.stop()
        if self.cgroups is not None:
            self.cgroups.close()
        shutil.rmtree(self.runtime, ignore_errors=True)


def describe_limit(which: str, limits: Limits) -> str:
    """A plain-words explanation of a limit a submission hit."""
    if which == "memory":
        return (f"your notebook used more than the {limits.memory / (1 << 30):.3g} GiB memory limit and was stopped "
                "(look for very large tensors, or results kept in a list inside a loop)")
    return (f"your notebook started more than {limits.pids} processes or threads and was stopped "
            "(look for os.fork, subprocess or multiprocessing in a loop)")
