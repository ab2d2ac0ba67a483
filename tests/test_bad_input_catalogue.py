"""The bad-input catalogue: one case per way a stage's input can be wrong, across the stages.

Every case runs the stage's CLI as DVC would and checks the same contract: a non-zero exit,
exactly one line `error: <stage>: ...` naming the file, field or parameter (and nothing
after it), no output and no temporary file left behind, every input byte-identical
afterwards, and an output already there from an earlier run untouched. The modules' own
tests (test_convert, test_stage_errors, ...) check more variants of each stage.
"""

import hashlib
import resource
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import pytest
import yaml

from conftest import REPO, btag_file, jetclass_file, make_source_tree, simple_jetclass_jets
from mpm.data.convert import convert_dataset
from mpm.data.preprocess import fit_preprocessor, save_preprocessor

JC_TRAIN = "raw/jetclass/train_100M/HToBB_000.root"


@dataclass
class Case:
    """A stage run on bad input: its arguments, the outputs it must not leave, and the
    fragment its error line must hold."""

    stage: str
    args: list[str]
    outputs: list[Path]
    message: str
    file_size_limit: int | None = None  # bytes: simulates a full disk
    previous: dict[Path, bytes] = field(default_factory=dict)  # outputs of an earlier run


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """Tiny raw files in the real schemas, converted JetClass and a fitted preprocessor."""
    root = tmp_path_factory.mktemp("catalogue")
    make_source_tree(root / "raw")
    params = yaml.safe_load((REPO / "profiles" / "smoke.yaml").read_text())
    convert_dataset(params, "jetclass", root / "raw", root / "jetclass")
    train = root / "jetclass" / "train.h5"
    save_preprocessor(fit_preprocessor(train, 100, 10, 10_000, 0), root / "pre.joblib")
    return root


def _copy(src: Path, dst: Path) -> Path:
    if src.is_dir():
        for f in src.rglob("*"):
            if f.is_file():
                _copy(f, dst / f.relative_to(src))
    else:
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(src.read_bytes())
    return dst


def _convert(tmp: Path, source: Path, damage: Callable[[Path], None], message: str) -> Case:
    raw = _copy(source / "raw", tmp / "raw")
    damage(tmp / JC_TRAIN)
    out, metrics = tmp / "jetclass", tmp / "convert.json"
    return Case("convert", ["--dataset", "jetclass", "--generated", str(raw), "--out", str(out),
                            "--metrics", str(metrics)], [out, metrics], message)  # fmt: skip


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _nan_px(path: Path) -> None:
    jets = simple_jetclass_jets(3)
    jets[1]["particles"][0]["px"] = float("nan")
    jetclass_file(path, jets)


def _empty_jet(path: Path) -> None:
    jetclass_file(path, [*simple_jetclass_jets(2), dict(jet_eta=0.1, jet_phi=0.0, particles=[])])


def _btag_schema(path: Path) -> None:
    btag_file(path, [dict(jet_eta=0.0, jet_phi=0.0, jet_flav=5, hadrons=[], tracks=[])])


def _preprocessor_on(tmp: Path, train: Path, message: str, **kwargs) -> Case:
    out = tmp / "pre.joblib"
    return Case("fit_preprocessor", ["--train", str(train), "--out", str(out)], [out], message,
                **kwargs)  # fmt: skip


def _h5_without_labels(tmp: Path, source: Path) -> Path:
    path = _copy(source / "jetclass" / "train.h5", tmp / "in" / "train.h5")
    with h5py.File(path, "a") as file:
        del file["labels"]
    return path


def _pretrain(tmp: Path, source: Path, backbone: str, message: str) -> Case:
    data = _copy(source / "jetclass", tmp / "in" / "jetclass")
    outs = {k: tmp / v for k, v in (("out", "b.pt"), ("checkpoints", "ckpt"),
                                    ("log-dir", "log"), ("metrics", "m.json"))}  # fmt: skip
    return Case("pretrain", ["--backbone", backbone, "--data", str(data), "--preprocessor",
                             str(source / "pre.joblib"),
                             *[f"--{k}={v}" for k, v in outs.items()]],
                [outs["out"], outs["metrics"]], message)  # fmt: skip


def _finetune(tmp: Path, source: Path, task: str, backbone: Path, message: str,
              n_out: int = 1) -> Case:  # fmt: skip
    """`task`: one or more, space-separated; `n_out` run folders."""
    outs = [tmp / f"run{i}" for i in range(n_out)]
    return Case("finetune", ["--task", *task.split(), "--backbone", str(backbone),
                             "--data", str(source / "jetclass"),
                             "--preprocessor", str(source / "pre.joblib"),
                             "--out", *map(str, outs)], outs, message)  # fmt: skip


def _junk(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"PK\x03\x04 not a torch file")
    return path


def _params_edit(key: str, value) -> Callable[[dict], None]:
    def edit(params: dict) -> None:
        node = params
        *parents, last = key.split(".")
        for name in parents:
            node = node[name]
        node[last] = value

    return edit


def _params_edits(values: dict) -> Callable[[dict], None]:
    def edit(params: dict) -> None:
        for key, value in values.items():
            _params_edit(key, value)(params)

    return edit


# id -> (params edit or None, builder(tmp, source) -> Case)
CATALOGUE = {
    "convert: not a ROOT file": (None, lambda t, s: _convert(
        t, s, lambda p: p.write_text("hello"), "HToBB_000.root")),
    "convert: truncated ROOT file": (None, lambda t, s: _convert(
        t, s, _truncate, "HToBB_000.root")),
    "convert: wrong schema (a BTag file among JetClass files)": (None, lambda t, s: _convert(
        t, s, _btag_schema, "HToBB_000.root: missing branch")),
    "convert: NaN constituent momentum": (None, lambda t, s: _convert(
        t, s, _nan_px, "part_px")),
    "convert: empty jet": (None, lambda t, s: _convert(t, s, _empty_jet, "no constituents")),
    "fit_preprocessor: truncated HDF5": (None, lambda t, s: _preprocessor_on(
        t, _truncate_copy(s / "jetclass/train.h5", t / "in/train.h5"), "not a readable HDF5")),
    "fit_preprocessor: HDF5 missing a dataset": (None, lambda t, s: _preprocessor_on(
        t, _h5_without_labels(t, s), "missing dataset 'labels'")),
    "fit_preprocessor: disk full (output over the file-size limit)": (None, lambda t, s: (
        _preprocessor_on(t, s / "jetclass/train.h5", "pre.joblib: File too large",
                         file_size_limit=4096,
                         previous={t / "pre.joblib": b"an earlier run's preprocessor"}))),
    "pretrain: mask_rate=1.5": (_params_edit("mask_rate", 1.5), lambda t, s: _pretrain(
        t, s, "regression", "'mask_rate' must be a number")),
    "pretrain: unknown reconstruction task": (None, lambda t, s: _pretrain(
        t, s, "diffusion", "'--backbone' must be one of")),
    "pretrain: empty training set (subset of 0 jets)": (
        _params_edit("pretrain.n_train_jets", 0), lambda t, s: _pretrain(
            t, s, "regression", "pretrain.n_train_jets")),
    "finetune: unknown task": (None, lambda t, s: _finetune(
        t, s, "tagging", t / "b.pt", "'--task' must be one of")),
    "finetune: fewer --out folders than tasks": (None, lambda t, s: _finetune(
        t, s, "btag vertex", t / "b.pt", "--out: 1 folder(s) for 2 tasks")),
    "finetune: tasks of two datasets in one stage": (None, lambda t, s: _finetune(
        t, s, "jetclass btag", t / "b.pt", "read different datasets", n_out=2)),
    "finetune: missing backbone artifact": (None, lambda t, s: _finetune(
        t, s, "jetclass", t / "missing.pt", "missing.pt: backbone file not found")),
    "finetune: corrupt backbone artifact": (None, lambda t, s: _finetune(
        t, s, "jetclass", _junk(t / "in/b.pt"), "b.pt: not a readable backbone file")),
    "reconstruct: corrupt pre-trained model": (None, lambda t, s: Case(
        "reconstruct", ["--model", f"regression={_junk(t / 'in/m.pt')}", "--data",
                        str(s / "jetclass/test.h5"), "--preprocessor", str(s / "pre.joblib"),
                        "--samples", str(t / "samples.npz"), "--metrics", str(t / "r.json")],
        [t / "samples.npz", t / "r.json"], "m.pt")),
    "cwola_data: more signal jets than the set holds": (
        _params_edits({"finetune.cwola.min_background_at_fpr": 0.1,
                       "finetune.grid.cwola_signal": [100000]}), lambda t, s: Case(
            "cwola_data", ["--jetclass", str(s / "jetclass"), "--out", str(t / "cwola")],
            [t / "cwola"], "'finetune.grid.cwola_signal' asks for 100000")),
    "cwola_data: too few QCD test jets at the SIC's working point": (
        _params_edits({"finetune.cwola.min_background_at_fpr": 1000,
                       "finetune.grid.cwola_signal": [0]}), lambda t, s: Case(
            "cwola_data", ["--jetclass", str(s / "jetclass"), "--out", str(t / "cwola")],
            [t / "cwola"], "finetune.cwola.min_background_at_fpr")),
    "aggregate: empty runs folder (every run of the grid missing)": (None, lambda t, s: Case(
        "aggregate", ["--runs", str((t / "in/runs").resolve()), "--out", str(t / "tables"),
                      "--metrics", str(t / "headline.json")],
        [t / "tables", t / "headline.json"], "metrics.json: run missing")),
    "generate: zero jets per file": (
        _params_edit("generate.jetclass.jets_per_file.val", 0), lambda t, s: Case(
            "generate", ["--out", str(t / "generated"), "--metrics", str(t / "g.json")],
            [t / "generated", t / "g.json"], "generate.jetclass.jets_per_file.val")),
    "ablation: Table 1 row out of range": (None, lambda t, s: Case(
        "ablation", ["--backbone", "kmeans", "--row", "9", "--out", str(t / "a.pt"),
                     "--checkpoints", str(t / "ckpt"), "--results", str(t / "run")],
        [t / "a.pt", t / "run"], "'--row' must be one of")),
    "ablation_tables: Table 1 rows without Fig. 5's base row": (
        _params_edit("ablation.table1_rows", [1, 2]), lambda t, s: Case(
            "ablation_tables", ["--runs", str(t / "in/runs"), "--final", str(t / "in/final"),
                                "--out", str(t / "tables"), "--metrics", str(t / "t1.json")],
            [t / "tables", t / "t1.json"], "'ablation.table1_rows' must include row 6")),
}


def _truncate_copy(src: Path, dst: Path) -> Path:
    _truncate(_copy(src, dst))
    return dst


def _digest(paths: list[Path]) -> dict[str, str]:
    files = sorted(f for p in paths for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file())
    return {str(f): hashlib.sha1(f.read_bytes()).hexdigest() for f in files}


def _limit_file_size(limit: int) -> Callable[[], None]:
    def limit_in_child() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return limit_in_child


def test_the_catalogue_covers_every_kind_of_bad_input():
    stages = {name.split(":")[0] for name in CATALOGUE}
    assert len(CATALOGUE) >= 15 and len(stages) >= 9


@pytest.mark.parametrize("name", list(CATALOGUE))
def test_bad_input(name, source, tmp_path):
    edit, build = CATALOGUE[name]
    params = yaml.safe_load((REPO / "profiles" / "smoke.yaml").read_text())
    if edit:
        edit(params)
    (tmp_path / "in").mkdir()
    case = build(tmp_path, source)
    params_file = tmp_path / "in" / "params.yaml"
    params_file.write_text(yaml.safe_dump(params))
    for path, content in case.previous.items():
        path.write_bytes(content)
    inputs = _digest([tmp_path / "in", source])

    proc = subprocess.run(
        [sys.executable, str(REPO / "stages" / f"{case.stage}.py"), "--params",
         str(params_file), *case.args],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        preexec_fn=_limit_file_size(case.file_size_limit) if case.file_size_limit else None,
    )  # fmt: skip

    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert errors[0].startswith(f"error: {case.stage}: ") and case.message in errors[0], errors
    assert proc.stderr.rstrip().endswith(errors[0])  # no traceback after it
    for out in case.outputs:
        if out in case.previous:
            assert out.read_bytes() == case.previous[out], f"{out}: an earlier output was lost"
        else:
            assert not out.exists(), f"{out} left behind"
    temporaries = [p for p in tmp_path.rglob(".*") if p.name != ".gitignore"]
    assert not temporaries, temporaries
    assert _digest([tmp_path / "in", source]) == inputs  # the inputs are untouched
