"""The class report: what an instructor reads after a deadline.

``cs-dense report OUT`` reads what ``cs-dense autograde ... --out OUT`` wrote
(``grades.csv`` and ``cells.csv``) and writes ``OUT/report/index.html`` with, per
assignment, the score distribution and each grade cell's pass rate (matplotlib PNGs beside
the page), the submissions whose status needs a look, and the slowest notebooks.

Definitions: a *submission* is a row whose status is not ``missing``; a grade cell is
*passed* when it earned all its points; rates and means are over submissions, so a crash
counts as zero, as it does in the grade.
"""

from __future__ import annotations

import csv
import html
import statistics
from collections import defaultdict
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from cs_dense.course.autograde import CELL_COLUMNS, CSV_COLUMNS

#: Statuses an instructor should look at before publishing grades.
NEEDS_A_LOOK = ("crashed", "timeout", "limit", "tampered", "invalid")


def _read(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    if not path.is_file():
        raise ValueError(f"{path} does not exist: run `cs-dense autograde SUBMISSIONS --out {path.parent}` first")
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != columns:
            raise ValueError(f"{path} has columns {reader.fieldnames}, expected {list(columns)}: "
                             "was it written by this version of cs-dense autograde?")
        return list(reader)


def summarise(grades: list[dict[str, str]], cells: list[dict[str, str]]) -> dict[str, dict]:
    """Per assignment: counts, score statistics and per-cell pass rates, as plain numbers."""
    submitted = {(g["student_id"], g["assignment_id"]) for g in grades if g["status"] != "missing"}
    summary: dict[str, dict] = {}
    for assignment in sorted({g["assignment_id"] for g in grades}):
        rows = [g for g in grades if g["assignment_id"] == assignment]
        scores = [float(g["score"]) for g in rows if g["status"] != "missing"]
        per_cell: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for c in cells:
            if c["assignment_id"] == assignment and (c["student_id"], assignment) in submitted:
                per_cell[c["grade_id"]].append((float(c["score"]), float(c["max_score"])))
        # the points the autograder can give: a written answer graded by hand is not among them
        autograded = sum(pairs[0][1] for pairs in per_cell.values())
        summary[assignment] = {
            "students": len(rows),
            "submitted": len(scores),
            "graded": sum(g["status"] == "graded" for g in rows),
            "max_score": float(rows[0]["max_score"]),
            "scores": scores,
            "mean": statistics.fmean(scores) if scores else float("nan"),
            "median": statistics.median(scores) if scores else float("nan"),
            "autograded_max": autograded,
            "full_marks": sum(s == autograded for s in scores) if per_cell else 0,
            "cells": {
                grade_id: {
                    "points": pairs[0][1],
                    "pass_rate": sum(score == points for score, points in pairs) / len(pairs),
                    "mean": statistics.fmean(score for score, _ in pairs),
                }
                for grade_id, pairs in per_cell.items()
            },
        }
    return summary


def _score_plot(assignment: str, info: dict, path: Path) -> None:
    figure = Figure(figsize=(6, 3.2), layout="constrained")
    axes = figure.subplots()
    top = info["max_score"]
    axes.hist(info["scores"], bins=[b - 0.5 for b in range(int(top) + 2)], color="#4c72b0", edgecolor="white")
    axes.axvline(info["mean"], color="#c44e52", linestyle="--", label=f"mean {info['mean']:.1f}")
    axes.set_xlim(-0.5, top + 0.5)
    axes.set_xlabel(f"score (of {top:g})")
    axes.set_ylabel("submissions")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_title(f"{assignment}: {info['submitted']} submissions")
    axes.legend(loc="best")
    figure.savefig(path, dpi=100)


def _cell_plot(assignment: str, info: dict, path: Path) -> None:
    names = list(info["cells"])
    rates = [100 * info["cells"][n]["pass_rate"] for n in names]
    figure = Figure(figsize=(6, max(2.4, 0.8 + 0.32 * len(names))), layout="constrained")
    axes = figure.subplots()
    axes.barh(range(len(names)), rates, color="#55a868")
    axes.set_yticks(range(len(names)), [f"{n} ({info['cells'][n]['points']:g} pt)" for n in names])
    axes.invert_yaxis()
    axes.set_xlim(0, 100)
    axes.set_xlabel("passed (% of submissions)")
    axes.set_title(f"{assignment}: grade cells")
    figure.savefig(path, dpi=100)


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_report(out: Path, slowest: int = 10) -> Path:
    """Write ``out/report/index.html`` (and its PNGs) from ``out/grades.csv`` and ``out/cells.csv``.

    Raises:
        ValueError: the CSV files are missing or have other columns.
    """
    out = Path(out)
    grades = _read(out / "grades.csv", CSV_COLUMNS)
    cells = _read(out / "cells.csv", CELL_COLUMNS)
    if not grades:
        raise ValueError(f"{out / 'grades.csv'} has no rows: nothing was graded")
    summary = summarise(grades, cells)
    folder = out / "report"
    folder.mkdir(exist_ok=True)
    e = html.escape
    parts = ["<h1>Class report</h1>",
             f"<p>{len({g['student_id'] for g in grades})} students, {len(summary)} assignments, "
             f"from {e(str(out / 'grades.csv'))}.</p>", "<h2>Assignments</h2>"]
    parts.append(_table(
        ["assignment", "students", "submitted", "graded", "mean", "median", "all autograded points"],
        [[e(a), str(i["students"]), str(i["submitted"]), str(i["graded"]), f"{i['mean']:.1f} / {i['max_score']:g}",
          f"{i['median']:.1f}", str(i["full_marks"])] for a, i in summary.items()],
    ))
    look = [g for g in grades if g["status"] in NEEDS_A_LOOK]
    parts.append(f"<h2>Needs a look ({len(look)})</h2>")
    if look:
        parts.append(_table(
            ["student", "assignment", "status", "detail", "feedback"],
            [[e(g["student_id"]), e(g["assignment_id"]), e(g["status"]), e(g["detail"]),
              f'<a href="../feedback/{e(g["student_id"])}/{e(g["assignment_id"])}/">page</a>'] for g in look],
        ))
    else:
        parts.append("<p>Every submission ran to the end (no crashed, timeout, limit, tampered or invalid rows).</p>")
    ran = sorted((g for g in grades if float(g["seconds"]) > 0), key=lambda g: -float(g["seconds"]))[:slowest]
    parts.append(f"<h2>The {len(ran)} slowest notebooks</h2>")
    parts.append(_table(["student", "assignment", "seconds", "status"],
                        [[e(g["student_id"]), e(g["assignment_id"]), g["seconds"], e(g["status"])] for g in ran]))
    for assignment, info in summary.items():
        parts.append(f"<h2>{e(assignment)}</h2>")
        if not info["submitted"]:
            parts.append("<p>No submissions.</p>")
            continue
        _score_plot(assignment, info, folder / f"{assignment}_scores.png")
        _cell_plot(assignment, info, folder / f"{assignment}_cells.png")
        parts.append(f'<img src="{e(assignment)}_scores.png" alt="score distribution of {e(assignment)}">'
                     f'<img src="{e(assignment)}_cells.png" alt="pass rate per grade cell of {e(assignment)}">')
        parts.append(_table(
            ["grade cell", "points", "passed", "mean points"],
            [[e(n), f"{c['points']:g}", f"{100 * c['pass_rate']:.0f}%", f"{c['mean']:.2f}"] for n, c in info["cells"].items()],
        ))
    style = ("body{font-family:sans-serif;max-width:70em;margin:2em auto}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left}img{max-width:49%}")
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Class report</title><style>{style}</style>"
            f"</head><body>{''.join(parts)}</body></html>\n")
    (folder / "index.html").write_text(page)
    return folder / "index.html"
