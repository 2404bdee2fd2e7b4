"""End to end: release, sample submissions, hostile submissions and feedback on the toy course.

One autograde run (two workers) grades a dozen submissions, each breaking something in
its own way; every row is checked against the score a hand reading of the toy gives.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import html
import json
import re
import shutil
import socket
import tempfile
from pathlib import Path

import nbformat
import psutil
import pytest

from cs_dense.course.autograde import autograde, kernel_threads
from cs_dense.course.check import check
from cs_dense.course.release import release
from cs_dense.course.report import NEEDS_A_LOOK, write_report
from cs_dense.course.samples import write_samples
from cs_dense.course.sandbox import Limits
from toy_course import ASSIGNMENT, HIDDEN_MARKER, make_toy_course, require_sandbox

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _set_source(nb, grade_id: str, source: str) -> None:
    cell = next(c for c in nb.cells if c.metadata["nbgrader"]["grade_id"] == grade_id)
    cell.source = source


ESCAPE = "cs-dense-escape-5d1e"  # files a hostile submission tries to leave behind
SLEEPER = "4242"  # a daemon runs `sleep 4242`
XSS = "xss-9b2c"


def _variants(complete: nbformat.NotebookNode, port: int) -> dict[str, tuple[object, float, str]]:
    """student id -> (notebook or raw text or None, expected score, expected status).

    ``add`` is worth 2 points; ``scale`` 3, with a hidden test. Hostile code goes in the
    ``add`` cell (before ``def add``) unless it is about ``scale`` or its tests.
    """

    def edit(**sources):
        nb = nbformat.from_dict(json.loads(json.dumps(complete)))
        for grade_id, source in sources.items():
            _set_source(nb, grade_id, source)
        return nb

    def before_add(code: str) -> nbformat.NotebookNode:
        return edit(add=code + "\ndef add(a, b):\n    return a + b")

    wrong_add = "def add(a, b):\n    return a - b"
    deleted = edit(scale="def scale(x, k):\n    return x")
    deleted.cells = [c for c in deleted.cells if c.metadata["nbgrader"]["grade_id"] != "test_scale"]
    greedy = edit()
    next(c for c in greedy.cells if c.metadata["nbgrader"]["grade_id"] == "test_add").metadata["nbgrader"]["points"] = 100
    tamper_course = (
        "import os, pathlib\n"
        "target = pathlib.Path(os.environ['CS_DENSE_DATA']).parent / 'solutions' / '99_toy' / '99_toy.ipynb'\n"
        "target.write_text('{}')\n"
        "def add(a, b):\n    return a + b"
    )
    script = edit()
    script.cells.insert(3, nbformat.v4.new_markdown_cell(f"<script>alert('{XSS}')</script><b onmouseover=alert(1)>{XSS}</b>"))
    return {
        "complete": (edit(), 5, "graded"),
        "forbidden": (edit(scale="import torch\ndef scale(x, k):\n    return torch.mul(x, k)"), 2, "graded"),
        "loops_in_function": (edit(scale="def scale(x, k):\n    while True:\n        pass"), 2, "graded"),
        "loops_at_top_level": (edit(scale="def scale(x, k):\n    return x * k\nwhile True:\n    pass"), 5, "graded"),
        "kills_kernel": (edit(scale="import os\ndef scale(x, k):\n    os._exit(1)"), 0, "crashed"),
        "tampers_tests": (edit(add=wrong_add, test_add="print('ok: add')", test_scale="pass"), 3, "graded"),
        "deletes_test": (deleted, 2, "graded"),
        "claims_equal": (
            edit(add="class Anything:\n    def __eq__(self, other):\n        return True\n"
                     "def add(a, b):\n    return Anything()"),
            3,
            "graded",
        ),
        "warns": (
            edit(add="import sys, warnings\ndef add(a, b):\n    warnings.warn('deprecated')\n"
                     "    print('progress', file=sys.stderr)\n    return a + b"),
            5,
            "graded",
        ),
        "raises_points": (greedy, 5, "graded"),
        # the course is read-only in the sandbox: the write fails, so `add` is never defined
        "tampers_course": (edit(add=tamper_course), 3, "graded"),
        "writes_environment": (before_add(
            "import pathlib, sys, torch, cs_dense\n"
            "for target in (pathlib.Path(torch.__file__), pathlib.Path(cs_dense.__file__), pathlib.Path(sys.prefix) / 'evil.pth',\n"
            "               pathlib.Path('/usr/lib/evil'), pathlib.Path('/etc/evil')):\n"
            "    try:\n"
            "        target.open('a').write('raise SystemExit')\n"
            "        print('WROTE', target)\n"
            "    except OSError as error:\n"
            "        print('refused', target, error.errno)"
        ), 5, "graded"),
        # everything a hidden test could be read from, printed whole if found
        "reads_secrets": (before_add(
            "import os\n"
            "for folder, dirs, files in os.walk('/'):\n"
            "    dirs[:] = [d for d in dirs if os.path.join(folder, d) not in ('/proc', '/sys', '/usr', '/dev')\n"
            "               and not d.startswith(('python3', 'site-packages'))]\n"
            "    for name in files:\n"
            "        if name.endswith(('.ipynb', '.db', '.json')) or name == 'nbgrader_config.py':\n"
            "            try:\n"
            "                print(os.path.join(folder, name), open(os.path.join(folder, name), errors='replace').read())\n"
            "            except OSError as error:\n"
            "                print(name, error)\n"
            "for pid in (p for p in os.listdir('/proc') if p.isdigit()):\n"
            "    print(pid, open(f'/proc/{pid}/cmdline').read())\n"
            "print(sorted(os.listdir('/')), os.listdir('.'), os.getuid())"
        ), 5, "graded"),
        # a function that prints its callers' source, In[] and linecache, and raises it in a hidden case
        "prints_caller": (edit(scale=(
            "import inspect, linecache\n"
            "def scale(x, k):\n"
            "    text = ' '.join(linecache.getline(f.filename, n) for f in inspect.stack() for n in range(1, 200))\n"
            "    text += ' '.join(get_ipython().user_ns.get('In', []))\n"
            "    print(text)\n"
            "    if k != 2.0:\n"
            "        raise ValueError(text)\n"
            "    return x * k"
        )), 2, "graded"),
        # a display made early, updated from inside a hidden test: the page keeps the early version
        "rewrites_output": (edit(
            add="from IPython.display import display\nhandle = display('placeholder-3f', display_id=True)\n"
                "def add(a, b):\n    return a + b",
            scale="import inspect\ndef scale(x, k):\n    if k != 2.0:\n"
                  "        handle.update('LEAKED ' + repr(inspect.stack()[1].frame.f_locals.get('case')))\n"
                  "    return x * k",
        ), 5, "graded"),
        "daemon": (before_add(
            "import os, time\n"
            "if os.fork() == 0:\n"
            "    os.setsid()\n"
            "    if os.fork() == 0:\n"
            "        time.sleep(0.5)\n"
            f"        for folder in ('/tmp', '/dev/shm', os.path.expanduser('~'), os.getcwd(), os.environ.get('CS_DENSE_DATA', '.')):\n"
            "            try:\n"
            f"                open(os.path.join(folder, '{ESCAPE}'), 'w').write('still here')\n"
            "            except OSError:\n"
            "                pass\n"
            f"        os.execv('/usr/bin/sleep', ['sleep', '{SLEEPER}'])\n"
            "    os._exit(0)"
        ), 5, "graded"),
        # the only processes it can see are itself and the sandbox's init, which ignores it
        "kills_parent": (before_add(
            "import os, signal\n"
            "for pid in [int(p) for p in os.listdir('/proc') if p.isdigit()]:\n"
            "    if pid != os.getpid():\n"
            "        try:\n"
            "            os.kill(pid, signal.SIGKILL)\n"
            "        except OSError as error:\n"
            "            print('kill', pid, error)\n"
            "try:\n"
            "    os.kill(os.getppid(), signal.SIGKILL)\n"
            "except OSError:\n"
            "    pass"
        ), 5, "graded"),
        "fork_bomb": (before_add(
            "import os, time\n"
            "def add(a, b):\n    return a + b\n"
            "while True:\n"
            "    try:\n"
            "        os.fork()\n"
            "    except OSError:\n"
            "        time.sleep(1)"
        ), 0, "limit"),
        "memory_bomb": (before_add(
            "hoard = []\n"
            "while True:\n"
            "    hoard.append(bytearray(64 << 20))"
        ), 0, "limit"),
        "fills_disk": (before_add(
            "import os\n"
            "for folder in ('/tmp', '.', os.path.expanduser('~')):\n"
            "    try:\n"
            "        with open(os.path.join(folder, 'filler'), 'wb') as handle:\n"
            "            while True:\n"
            "                handle.write(bytes(1 << 20))\n"
            "    except OSError as error:\n"
            "        print('full:', folder, error.errno)\n"
            "    os.remove(os.path.join(folder, 'filler'))"
        ), 5, "graded"),
        "network": (before_add(
            "import socket\n"
            f"for address in (('127.0.0.1', {port}), ('pypi.org', 443)):\n"
            "    try:\n"
            "        socket.create_connection(address, timeout=3).sendall(b'graded')\n"
            "        print('CONNECTED', address)\n"
            "    except OSError as error:\n"
            "        print('no network:', address, error)"
        ), 5, "graded"),
        "ignores_interrupt": (edit(scale=(
            "import signal\n"
            "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
            "def scale(x, k):\n    return x * k\n"
            "while True:\n    pass"
        )), 0, "timeout"),  # at the first cell time limit: SIGINT does nothing
        "floods_output": (before_add("print('y' * (64 << 20))"), 5, "graded"),
        "shows_script": (before_add(
            "from IPython.display import HTML, SVG, Javascript, display\n"
            f"display(HTML(\"<script>alert('{XSS}')</script>\"))\n"
            f"display(Javascript(\"alert('{XSS}')\"))\n"
            f"display(SVG('<svg xmlns=\"http://www.w3.org/2000/svg\"><script>alert(\"{XSS}\")</script></svg>'))"
        ), 5, "graded"),
        "markdown_script": (script, 5, "graded"),
        "symlinked": ("symlink", 0, "invalid"),
        "unreadable": ("this is not a notebook {", 0, "invalid"),
        "enormous": ("{" + " " * (65 << 20) + "}", 0, "invalid"),
        "absent": (None, 0, "missing"),
    }


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    require_sandbox()
    root = tmp_path_factory.mktemp("toy")
    course = make_toy_course(root / "course")
    release(course)
    write_samples(course)
    complete = nbformat.read(course.data / "samples" / "complete" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", as_version=4)
    submissions = root / "submissions"
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    variants = _variants(complete, listener.getsockname()[1])
    for student, (content, _, _) in variants.items():
        folder = submissions / student / ASSIGNMENT
        folder.mkdir(parents=True)
        path = folder / f"{ASSIGNMENT}.ipynb"
        if content == "symlink":
            path.symlink_to(course.data / "samples" / "complete" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb")
        elif isinstance(content, str):
            path.write_text(content)
        elif content is not None:
            nbformat.write(content, path)
    solution_before = (course.solutions / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").read_bytes()
    out = root / "out"
    limits = Limits(memory=2 << 30, pids=256, disk=64 << 20)
    rows = autograde(course, submissions, out, workers=2, cell_timeout=20, notebook_timeout=150, limits=limits,
                     progress=lambda line: None)
    connections = []
    with contextlib.suppress(TimeoutError):
        connections.append(listener.accept())
    listener.close()
    return course, variants, rows, out, solution_before, connections


def test_every_submission_gets_the_expected_grade(graded):
    _, variants, rows, _, _, _ = graded
    got = {r.student_id: (r.score, r.status) for r in rows}
    expected = {student: (float(score), status) for student, (_, score, status) in variants.items()}
    assert got == expected
    assert all(r.max_score == 5 for r in rows)


def test_grades_csv_has_one_row_per_submission(graded):
    _, variants, _, out, _, _ = graded
    with open(out / "grades.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert list(table[0]) == ["student_id", "assignment_id", "score", "max_score", "status", "detail", "seconds"]
    assert sorted(r["student_id"] for r in table) == sorted(variants)
    crashed = next(r for r in table if r["student_id"] == "kills_kernel")
    assert "kernel died" in crashed["detail"]
    ran = [r for r in table if r["status"] not in ("missing", "invalid")]
    assert all(float(r["seconds"]) > 1 for r in ran)  # a kernel starts; nothing runs in no time
    assert all(float(r["seconds"]) == 0 for r in table if r not in ran)


def test_cells_csv_adds_up_to_the_grades_and_the_report_reads_it(graded):
    _, variants, rows, out, _, _ = graded
    with open(out / "cells.csv", newline="") as handle:
        cells = list(csv.DictReader(handle))
    assert {(c["grade_id"], c["max_score"]) for c in cells} == {("test_add", "2"), ("test_scale", "3")}
    for row in rows:  # nbgrader's total for the submission equals the sum of its cells
        mine = [float(c["score"]) for c in cells if c["student_id"] == row.student_id]
        assert len(mine) == 2 and sum(mine) == row.score, row.student_id
    page = write_report(out).read_text()
    look = page.split("Needs a look (")[1].split("<h2>")[0]
    needing = {student for student, (_, _, status) in variants.items() if status in NEEDS_A_LOOK}
    assert needing == {"kills_kernel", "fork_bomb", "memory_bomb", "ignores_interrupt", "symlinked", "unreadable", "enormous"}
    assert look.startswith(f"{len(needing)})") and all(f"<td>{s}</td>" in look for s in needing)


def test_course_files_are_untouched(graded):
    course, _, _, _, solution_before, _ = graded
    assert (course.solutions / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").read_bytes() == solution_before


def test_nothing_survives_and_nothing_escapes(graded):
    course, _, _, out, _, connections = graded
    survivors = [p.info for p in psutil.process_iter(["pid", "cmdline"]) if (p.info["cmdline"] or [])[-1:] == [SLEEPER]]
    assert survivors == [], "a daemon outlived its job"
    escaped = [p for place in (Path(tempfile.gettempdir()), Path("/dev/shm"), Path.home()) for p in place.glob(ESCAPE)]
    escaped += [p for place in (course.root, out.parent) for p in place.rglob(ESCAPE)]
    assert escaped == []
    assert connections == [], "a submission reached a socket on the grader's loopback"


def _page(out, student: str) -> str:
    return (out / "feedback" / student / ASSIGNMENT / f"{ASSIGNMENT}.html").read_text()


def _printed(out, student: str) -> str:
    """A feedback page as text (printed lines differ from the source's quoted strings)."""
    return html.unescape(re.sub(r"<[^>]+>", "", _page(out, student)))


def test_limits_are_explained(graded):
    _, _, rows, out, _, _ = graded
    detail = {r.student_id: r.detail for r in rows}
    assert "memory limit" in detail["memory_bomb"] and "2 GiB" in detail["memory_bomb"]
    assert "256 processes or threads" in detail["fork_bomb"]
    assert "after it was interrupted" in detail["ignores_interrupt"]
    assert "symbolic link" in detail["symlinked"]
    assert "at most 64 MiB" in detail["enormous"]
    assert "memory limit" in _page(out, "memory_bomb")


def test_what_the_sandbox_refused_shows_in_feedback(graded):
    _, _, _, out, _, _ = graded
    printed = functools.partial(_printed, out)
    environment = printed("writes_environment")
    assert "WROTE /" not in environment and len(re.findall(r"refused /\S+ 30", environment)) == 5  # EROFS
    network = printed("network")
    assert "CONNECTED (" not in network and network.count("no network: (") == 2
    assert len(re.findall(r"full: \S+ 28", printed("fills_disk"))) == 3  # ENOSPC
    secrets = printed("reads_secrets")
    assert "gradebook" not in secrets and "solutions" not in secrets and "BEGIN HIDDEN" not in secrets


def test_feedback_is_capped_and_runs_no_script(graded):
    _, variants, _, out, _, _ = graded
    flood = _page(out, "floods_output")
    assert "output cut" in flood and len(flood) < 8 << 20
    for student in variants:
        page = _page(out, student)
        assert "Content-Security-Policy" in page.split("</head>")[0], student
        assert f"<script>alert('{XSS}')" not in page and f'<script>alert("{XSS}")' not in page, student
        assert "<b onmouseover" not in page and "<svg" not in page, student


def test_feedback_exists_for_everyone_and_hides_hidden_tests(graded):
    _, variants, _, out, _, _ = graded
    for student in variants:
        page = out / "feedback" / student / ASSIGNMENT / f"{ASSIGNMENT}.html"
        assert page.is_file(), student
        text = page.read_text()
        assert HIDDEN_MARKER not in text, student
        assert "HIDDEN TESTS" not in text, student
    forbidden_page = _page(out, "forbidden")
    assert "torch.mul, which is disabled" in forbidden_page
    assert "guards.py" not in forbidden_page
    assert "hidden tests: passed" in _page(out, "complete")
    assert "the hidden tests of this exercise failed" in _page(out, "prints_caller")
    rewritten = _printed(out, "rewrites_output")
    assert "'placeholder-3f'" in rewritten and f"LEAKED '{HIDDEN_MARKER}" not in rewritten


def test_release_has_no_solutions_or_hidden_tests(graded):
    course = graded[0]
    text = (course.notebooks / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").read_text()
    assert HIDDEN_MARKER not in text
    assert "return a + b" not in text
    assert "raise NotImplementedError()" in text


def test_check_scores_visible_tests(graded):
    course = graded[0]
    complete = check(course.data / "samples" / "complete" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb")
    blank = check(course.notebooks / ASSIGNMENT / f"{ASSIGNMENT}.ipynb")
    assert [(r.grade_id, r.score) for r in complete] == [("test_add", 2), ("test_scale", 3)]
    assert [(r.grade_id, r.score) for r in blank] == [("test_add", 0), ("test_scale", 0)]
    assert "NotImplementedError" in blank[0].message and "not written yet" in blank[0].message


def test_autograde_rejects_bad_arguments(tmp_path):
    course = make_toy_course(tmp_path / "course")
    with pytest.raises(ValueError, match="does not exist"):
        autograde(course, tmp_path / "nowhere", tmp_path / "out")
    (tmp_path / "subs" / "alice" / "not_an_assignment").mkdir(parents=True)
    with pytest.raises(ValueError, match="known assignment"):
        autograde(course, tmp_path / "subs", tmp_path / "out")
    with pytest.raises(ValueError, match="workers"):
        autograde(course, tmp_path / "subs", tmp_path / "out", workers=0)


def test_kernels_share_the_cores_among_workers(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert [kernel_threads(w) for w in (1, 2, 3, 8, 16)] == ["8", "4", "2", "1", "1"]
    monkeypatch.setattr("os.cpu_count", lambda: None)
    assert kernel_threads(1) == "1"
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert kernel_threads(2) == "3"


def test_without_the_sandbox_grading_still_works_and_catches_tampering(tmp_path, monkeypatch, capsys):
    from cs_dense.course.cli import main

    course = make_toy_course(tmp_path / "course")
    release(course)
    write_samples(course)
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap here
    assert main(["--root", str(course.root), "autograde", str(course.data / "samples"), "--out", str(tmp_path / "o")]) == 2
    assert "apt install bubblewrap" in capsys.readouterr().err
    monkeypatch.undo()
    submissions = tmp_path / "submissions"
    shutil.copytree(course.data / "samples", submissions)
    complete = nbformat.read(submissions / "complete" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", as_version=4)
    (submissions / "tampers" / ASSIGNMENT).mkdir(parents=True)
    nbformat.write(_variants(complete, 0)["tampers_course"][0], submissions / "tampers" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb")
    solution_before = (course.solutions / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").read_bytes()
    rows = autograde(course, submissions, tmp_path / "out", sandbox=False, progress=lambda line: None)
    got = {r.student_id: (r.score, r.status) for r in rows}
    assert got["complete"] == (5, "graded") and got["blank"] == (0, "graded")
    assert got["tampers"] == (0, "tampered")
    assert (course.solutions / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").read_bytes() == solution_before


# --------------------------------------------------------------- checks the kernel cannot switch off

REAL = "00_tasks_and_data"
#: Turns every later test cell into `pass` (every test "passes" in the kernel), but lets the
#: grader's cross-check cell run: a kernel that does not answer it loses every point.
SKIP_TESTS = (
    "def _skip_tests(lines):\n"
    "    text = ''.join(lines)\n"
    "    return ['pass\\n'] if 'check' in text and 'crosscheck' not in text else lines\n"
    "get_ipython().input_transformers_post.append(_skip_tests)\n"
)
#: Replaces the checking functions every test cell imports, and torch's comparisons.
PATCH_CHECKS = (
    "import torch, cs_dense.grading, cs_dense.grading.harness, cs_dense.grading.checks\n"
    "def _agree(*args, **kwargs):\n"
    "    return None\n"
    "for _module in (cs_dense.grading, cs_dense.grading.harness, cs_dense.grading.checks):\n"
    "    for _name in ('compare', 'assert_tensor_close', 'assert_int_equal', 'assert_scalar_close', 'assert_dict_close'):\n"
    "        if hasattr(_module, _name):\n"
    "            setattr(_module, _name, _agree)\n"
    "torch.equal = lambda *args: True\n"
    "torch.testing.assert_close = _agree\n"
)
WRONG_BOX_CONVERT = "def box_convert(boxes, in_fmt, out_fmt):\n    return boxes.clone()\n"


@pytest.fixture(scope="module")
def tampering(tmp_path_factory):
    """Notebook 00's complete sample with one exercise made wrong and the kernel patched to hide it."""
    require_sandbox()
    from cs_dense.course.layout import Course

    course = Course(Path(__file__).resolve().parents[1])
    root = tmp_path_factory.mktemp("tampering")
    sample = course.data / "samples" / "complete" / REAL / f"{REAL}.ipynb"
    masks_cell = next(c for c in nbformat.read(sample, as_version=4).cells if c.metadata["nbgrader"]["grade_id"] == "masks_to_boxes")
    wrong_masks = masks_cell.source.replace("x2 = width - cols.flip(-1).argmax(dim=1)", "x2 = width - 1 - cols.flip(-1).argmax(dim=1)")
    assert wrong_masks != masks_cell.source
    variants = {  # student -> (solution cell, its new source, expected score)
        "skips_tests": ("box_convert", SKIP_TESTS + WRONG_BOX_CONVERT, 6),
        "patches_checks": ("masks_to_boxes", PATCH_CHECKS + wrong_masks, 6),
        # every later cell becomes `pass`, the cross-check's too: it gets no answers
        "silences_everything": ("box_convert", "get_ipython().input_transformers_post.append(lambda lines: ['pass\\n'])\n"
                                + WRONG_BOX_CONVERT, 0),
    }
    for student, (grade_id, source, _) in variants.items():
        nb = nbformat.read(sample, as_version=4)
        _set_source(nb, grade_id, source)
        (root / "subs" / student / REAL).mkdir(parents=True)
        nbformat.write(nb, root / "subs" / student / REAL / f"{REAL}.ipynb")
    rows = autograde(course, root / "subs", root / "out", workers=2, progress=lambda line: None)
    pages = {s: html.unescape(re.sub(r"<[^>]+>", "", (root / "out" / "feedback" / s / REAL / f"{REAL}.html").read_text()))
             for s in variants}
    return variants, rows, pages


def test_a_patched_kernel_does_not_earn_the_points_of_a_wrong_answer(tampering):
    variants, rows, pages = tampering
    assert {r.student_id: (r.score, r.status) for r in rows} == {s: (v[2], "graded") for s, v in variants.items()}
    # the kernel was fooled: no test failed in it, only the grader's cross-check did
    for student, cell in (("skips_tests", "box_convert"), ("patches_checks", "masks_to_boxes")):
        page = pages[student]
        assert page.count("CrossCheckFailed") == 1, student
        assert f"judged the answers outside your kernel: {cell} [" in page, student
        assert page.count("grader's cross-check: passed") == 2, student
        assert "hidden tests of this exercise failed" not in page, student
    silenced = pages["silences_everything"]
    assert silenced.count("the kernel wrote no answers") == 3 and silenced.count("CrossCheckFailed") == 3
    assert "HiddenTestsFailed" not in silenced  # every hidden test "passed" in the silenced kernel


def test_an_interrupted_run_resumes_and_force_grades_again(tmp_path):
    course = make_toy_course(tmp_path / "course")
    release(course)
    write_samples(course)
    out = tmp_path / "out"

    def grade(**kwargs) -> tuple[list, list[str]]:
        lines: list[str] = []
        rows = autograde(course, course.data / "samples", out, sandbox=False, progress=lines.append, **kwargs)
        return rows, lines

    first, lines = grade()
    assert [line.split(" ")[:2] for line in lines] == [["[1/3", "#######"], ["[2/3", "#############"],
                                                        ["[3/3", "####################"]]
    assert lines[-1].split("]")[0].endswith("0 min 00 s left")
    table = (out / "grades.csv").read_text()
    again, lines = grade()
    assert lines == [] and again == first and (out / "grades.csv").read_text() == table
    assert (out / "feedback" / "complete" / ASSIGNMENT / f"{ASSIGNMENT}.html").is_file()
    # as if the run had stopped before `partial` was graded
    for name in ("grades.csv", "cells.csv"):
        text = (out / name).read_text().splitlines(keepends=True)
        (out / name).write_text("".join(line for line in text if not line.startswith("partial,")))
    resumed, lines = grade()
    assert len(lines) == 1 and "partial" in lines[0] and lines[0].startswith("[1/1 ")
    assert [(r.student_id, r.score, r.cells) for r in resumed] == [(r.student_id, r.score, r.cells) for r in first]
    _, lines = grade(force=True)
    assert len(lines) == 3
    (out / "cells.csv").write_text("something else\n")
    with pytest.raises(ValueError, match="--force"):
        grade()
