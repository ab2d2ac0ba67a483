"""Every DVC stage declares the code it runs: the library files its script imports, directly
or through other library modules (lazy imports inside functions included), so that a change
to any of them re-runs the stage."""

import ast
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"


def _module_file(name: str) -> Path | None:
    path = SRC.joinpath(*name.split("."))
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _imported(path: Path) -> set[str]:
    """The mpm modules `path` imports anywhere in it (`from a import b`: a, and a.b if b is a
    module), with their parent packages (whose __init__ runs first)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
    parents = {".".join(n.split(".")[:i]) for n in names for i in range(1, n.count(".") + 1)}
    return {n for n in names | parents if n.split(".")[0] == "mpm"}


def library_files(script: Path) -> set[str]:
    """The files under src/ that `script` runs (transitively), repository-relative."""
    seen, todo = set(), [script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo += [f for f in map(_module_file, _imported(path)) if f is not None]
    return {p.relative_to(REPO).as_posix() for p in seen - {script}}


def stage_bodies() -> dict[str, dict]:
    """Each stage of dvc.yaml (a foreach or matrix stage: its template) by name."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return {name: stage.get("do", stage) for name, stage in stages.items()}


def _imports_nothing(path: Path) -> bool:
    """A package __init__ of a docstring and constants only (its stages' results cannot
    depend on it)."""
    nodes = ast.walk(ast.parse(path.read_text()))
    return path.name == "__init__.py" and not any(
        isinstance(node, ast.Import | ast.ImportFrom) for node in nodes
    )


def undeclared(body: dict) -> list[str]:
    """The library files a stage's script runs that none of its deps (a file or a folder
    above it) names; package __init__ files that import nothing aside."""
    script = re.search(r"python (stages/\w+\.py)", body["cmd"])[1]
    deps = [d if isinstance(d, str) else next(iter(d)) for d in body.get("deps", [])]

    def covered(file: str) -> bool:
        return any(file == d or file.startswith(d.rstrip("/") + "/") for d in deps)

    return sorted(f for f in library_files(REPO / script)
                  if not covered(f) and not _imports_nothing(REPO / f))  # fmt: skip


@pytest.mark.parametrize("stage", sorted(stage_bodies()))
def test_every_stage_declares_the_library_code_it_runs(stage):
    assert undeclared(stage_bodies()[stage]) == []


def test_the_import_closure_follows_library_modules_and_their_lazy_imports():
    files = library_files(REPO / "stages" / "ablation.py")
    # mpm.ablation imports mpm.downstream.run inside probe(); run imports stored_fit at the top
    assert {"src/mpm/ablation.py", "src/mpm/downstream/run.py",
            "src/mpm/downstream/stored_fit.py", "src/mpm/cli.py"} <= files  # fmt: skip
    assert not any(f.startswith("src/mpm/data/generator/") for f in files)


def _finetune_stages() -> dict[str, tuple[dict, list[str]]]:
    """The stages that run stages/finetune.py, with the tasks of their --task."""
    found = {}
    for name, body in stage_bodies().items():
        match = re.search(r"stages/finetune\.py --task ((?:\w+ )+)--", body["cmd"])
        if match:
            found[name] = (body, match[1].split())
    return found


@pytest.mark.parametrize("stage", sorted(_finetune_stages()))
def test_every_finetune_stage_declares_the_grid_keys_its_runs_read(stage):
    """The runs of a finetune stage are its tasks' sizes of params `finetune.grid` in each
    mode, seed and fine-tuned subset: a change to any of them re-runs the stage."""
    body, tasks = _finetune_stages()[stage]
    grid = "finetune.grid"
    wanted = {f"{grid}.modes", f"{grid}.seeds", f"{grid}.finetuned_sizes"}
    wanted |= {f"{grid}.cwola_signal" if t == "cwola" else f"{grid}.sizes.{t}" for t in tasks}
    declared = {p if isinstance(p, str) else next(iter(p)) for p in body.get("params", [])}
    assert wanted - declared == set()
