"""Finding the course's ``data/`` folder from wherever a notebook runs.

Notebooks run from ``solutions/NN_topic/``, ``notebooks/NN_topic/`` or, under
autograding, a temporary folder; the autograder sets ``CS_DENSE_DATA``. Elsewhere the
folder is found by walking up to the repository root.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

import cs_dense

#: Environment variable that, when set, names the data folder outright.
DATA_ENV_VAR = "CS_DENSE_DATA"
PROJECT_NAME = "cs_dense"


def normalise_project_name(name: str) -> str:
    """A project name in PEP 503 normal form, so ``cs_dense`` matches ``cs-dense``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _is_course_root(folder: Path) -> bool:
    """Whether ``folder`` holds ``data/`` and a ``pyproject.toml`` naming this project."""
    pyproject = folder / "pyproject.toml"
    if not ((folder / "data").is_dir() and pyproject.is_file()):
        return False
    try:
        name = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["name"]
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, KeyError, TypeError):
        return False
    return isinstance(name, str) and normalise_project_name(name) == normalise_project_name(PROJECT_NAME)


def _package_data_dir() -> Path:
    """``data/`` beside the installed package (exists for an editable or source install)."""
    return Path(cs_dense.__file__).resolve().parents[1] / "data"


def find_data_dir(start: str | Path | None = None) -> Path:
    """The course's ``data/`` folder.

    Looked up in this order:

    1. the environment variable ``CS_DENSE_DATA``, if set (it must name a folder);
    2. walking up from ``start`` to the first folder that contains ``data/`` and a
       ``pyproject.toml`` whose ``[project] name`` is ``cs_dense``;
    3. ``data/`` beside the installed ``cs_dense`` package, if it exists.

    Args:
        start: folder to walk up from; default the current working directory.

    Returns:
        Path: absolute path of the data folder.

    Raises:
        ValueError: if ``CS_DENSE_DATA`` is set but is not an existing folder.
        FileNotFoundError: if no data folder is found; the message says to set
            ``CS_DENSE_DATA``.
    """
    value = os.environ.get(DATA_ENV_VAR)
    if value:
        path = Path(value).expanduser()
        if not path.is_dir():
            raise ValueError(f"{DATA_ENV_VAR} must name an existing folder, got {value!r}")
        return path.resolve()
    here = Path.cwd() if start is None else Path(start).expanduser()
    here = here.resolve()
    for folder in (here, *here.parents):
        if _is_course_root(folder):
            return folder / "data"
    fallback = _package_data_dir()
    if fallback.is_dir():
        return fallback
    raise FileNotFoundError(
        f"could not find the course's data/ folder above {here} nor beside the cs_dense "
        f"package ({fallback}); set the environment variable {DATA_ENV_VAR} to its path"
    )
