"""Stage deps cannot go stale: every file a stage's command imports is among its deps.

The import closure of `pipelines/<stage>.py` is computed from the source (every import
statement, also those inside functions, since they run too), and each file in it must
lie under one of the stage's `deps` in dvc.yaml. Otherwise an edit to that file would
leave `dvc repro` rerunning nothing, with outputs that no longer match the code.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ROOTS = {"mlpipe": REPO / "src", "pipelines": REPO}  # top-level package -> folder above it
DVC = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))
STAGES = sorted(DVC["stages"])


def module_file(name: str) -> Path | None:
    """The file that importing `name` runs last (a module, or a package's __init__.py)."""
    top = name.split(".")[0]
    if top not in ROOTS:
        return None
    base = ROOTS[top].joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def files_run_by_import(name: str) -> list[Path]:
    """Importing a.b.c runs a/__init__.py, a/b/__init__.py and a/b/c(.py|/__init__.py)."""
    parts = name.split(".")
    found = (module_file(".".join(parts[:i])) for i in range(1, len(parts) + 1))
    return [f for f in found if f is not None]


def imported_names(path: Path) -> set[str]:
    """Module names `path` imports, absolute; `from pkg import sub` counts `pkg.sub` too."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = _package_of(path)
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, package)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return {n for n in names if n.split(".")[0] in ROOTS}


def _package_of(path: Path) -> str:
    """The package a relative import in `path` starts from."""
    for top, folder in ROOTS.items():
        if path.is_relative_to(folder / top):
            parts = path.relative_to(folder).with_suffix("").parts
            return ".".join(parts[:-1])  # a/b/c.py -> a.b; a/b/__init__.py -> a.b
    return ""


def _absolute(node: ast.ImportFrom, package: str) -> str:
    if node.level == 0:
        return node.module or ""
    parts = package.split(".")
    base = parts[: len(parts) - node.level + 1]
    return ".".join([*base, *([node.module] if node.module else [])])


def import_closure(entry: Path) -> set[Path]:
    """Every project file that running `entry` can import, transitively."""
    seen: set[Path] = set()
    todo = [entry]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in imported_names(path):
            todo.extend(files_run_by_import(name))
    return seen


def uncovered(files: set[Path], deps: list[str]) -> list[str]:
    """Files (relative to the repo) under none of `deps` (files or folders)."""
    roots = [REPO / d for d in deps if "${" not in d]
    return sorted(
        str(f.relative_to(REPO))
        for f in files
        if not any(f == r or f.is_relative_to(r) for r in roots if r.exists())
    )


def stage_entry(stage: str) -> Path:
    return REPO / "pipelines" / f"{stage}.py"


@pytest.mark.parametrize("stage", STAGES)
def test_stage_runs_its_own_entry_point(stage):
    assert f"python -m pipelines.{stage} " in DVC["stages"][stage]["cmd"] + " "


@pytest.mark.parametrize("stage", STAGES)
def test_stage_deps_cover_every_imported_file(stage):
    closure = import_closure(stage_entry(stage))
    assert len(closure) > 5, f"{stage}: implausibly small import closure {sorted(closure)}"
    gaps = uncovered(closure, DVC["stages"][stage]["deps"])
    assert not gaps, f"dvc.yaml stage {stage!r}: imported but in no dep: {gaps}"


def test_closure_follows_function_level_and_from_imports():
    closure = {str(p.relative_to(REPO)) for p in import_closure(stage_entry("train"))}
    # `from mlpipe.tracking import logged_model` runs inside a function (rank 0 only)
    assert "src/mlpipe/tracking/logged_model.py" in closure
    # `from mlpipe.models import cnn, resnet, vit` in models/__init__.py
    assert {"src/mlpipe/models/cnn.py", "src/mlpipe/models/vit.py"} <= closure
    assert "src/mlpipe/__init__.py" in closure


def test_a_missing_dep_is_reported():
    deps = [d for d in DVC["stages"]["train"]["deps"] if d != "src/mlpipe/models"]
    gaps = uncovered(import_closure(stage_entry("train")), deps)
    assert "src/mlpipe/models/resnet.py" in gaps and "src/mlpipe/models/__init__.py" in gaps
