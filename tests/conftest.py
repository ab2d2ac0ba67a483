"""Shared fixtures: small ROOT files in the exact real schemas, hand-written or generated."""

import shutil
import subprocess
import sys
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import yaml

from mpm.data.convert import convert_dataset
from mpm.data.preprocess import fit_preprocessor, save_preprocessor
from mpm.data.root_io import write_btag, write_jetclass

REPO = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(items):
    """The slow end-to-end tests first. Under `-n 2 --dist loadgroup` (make test) every test is
    its own unit of work, handed out in this order as workers free up (a worker is sent a
    new one while it holds two or fewer): the two longest start at once, one on each worker,
    and little waits behind them."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def jetclass_file(path: Path, jets: list[dict], label: str = "Hbb") -> Path:
    """`jets`: dicts with jet_eta, jet_phi and `particles`, a list of dicts with px, py, deta,
    dphi, d0val, dzval, charge, kind (photon|neutral|hadron|electron|muon)."""
    kinds = ("Photon", "NeutralHadron", "ChargedHadron", "Electron", "Muon")
    short = dict(zip(("photon", "neutral", "hadron", "electron", "muon"), kinds))
    part = {
        k: []
        for k in (
            "px",
            "py",
            "pz",
            "energy",
            "deta",
            "dphi",
            "d0val",
            "d0err",
            "dzval",
            "dzerr",
            "charge",
            *(f"is{k}" for k in kinds),
        )
    }
    for jet in jets:
        rows = {k: [] for k in part}
        for p in jet["particles"]:
            for k in ("px", "py", "deta", "dphi", "charge"):
                rows[k].append(p[k])
            rows["pz"].append(p.get("pz", 1.0))
            rows["energy"].append(p.get("energy", 100.0))
            for k in ("d0val", "dzval"):
                rows[k].append(p.get(k, 0.0))
            charged = p["kind"] not in ("photon", "neutral")
            rows["d0err"].append(p.get("d0err", 0.01 if charged else 0.0))
            rows["dzerr"].append(p.get("dzerr", 0.02 if charged else 0.0))
            for k in kinds:
                rows[f"is{k}"].append(int(short[p["kind"]] == k))
        for k in part:
            part[k].append(rows[k])
    part = {k: ak.Array(v) for k, v in part.items()}
    n = len(jets)
    jet = {
        "jet_pt": [j.get("jet_pt", 600.0) for j in jets],
        "jet_eta": [j["jet_eta"] for j in jets],
        "jet_phi": [j["jet_phi"] for j in jets],
        "jet_energy": [1000.0] * n,
        "jet_nparticles": [len(j["particles"]) for j in jets],
        "jet_sdmass": [j.get("jet_sdmass", 125.0) for j in jets],
        **{f"jet_tau{i}": [0.5] * n for i in range(1, 5)},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    write_jetclass(path, part, {k: np.asarray(v) for k, v in jet.items()}, label)
    return path


def btag_file(path: Path, jets: list[dict]) -> Path:
    """`jets`: dicts with jet_eta, jet_phi, jet_flav, hadrons [(pdgid, z)], `tracks` (dicts
    with pt, eta, phi, d0, z0, charge, pdg_id, vtx_index, prod_z)."""
    fields = ("pt", "eta", "phi", "d0", "z0", "charge", "pdg_id", "vtx_index", "prod_z")
    trk = {k: ak.Array([[t[k] for t in j["tracks"]] for j in jets]) for k in fields}
    trk["d0err"] = ak.Array([[0.01] * len(j["tracks"]) for j in jets])
    trk["z0err"] = ak.Array([[0.02] * len(j["tracks"]) for j in jets])
    hadron = {
        "pdgid": ak.Array([[h[0] for h in j["hadrons"]] for j in jets]),
        "z": ak.Array([[float(h[1]) for h in j["hadrons"]] for j in jets]),
    }
    jet = {
        "jet_pt": np.array([j.get("jet_pt", 50.0) for j in jets]),
        "jet_eta": np.array([j["jet_eta"] for j in jets]),
        "jet_phi": np.array([j["jet_phi"] for j in jets]),
        "jet_M": np.array([j.get("jet_M", 10.0) for j in jets]),
        "jet_flav": np.array([j["jet_flav"] for j in jets]),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    write_btag(path, trk, hadron, jet)
    return path


def simple_jetclass_jets(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    jets = []
    for _ in range(n):
        particles = [
            dict(
                px=float(rng.uniform(1, 50)),
                py=float(rng.uniform(1, 50)),
                deta=float(rng.normal(0, 0.2)),
                dphi=float(rng.normal(0, 0.2)),
                d0val=float(rng.normal(0, 0.1)),
                dzval=float(rng.normal(0, 0.1)),
                charge=1.0,
                kind="hadron",
            )
            for _ in range(int(rng.integers(1, 6)))
        ]
        jets.append(dict(jet_eta=float(rng.uniform(-2, 2)), jet_phi=0.0, particles=particles))
    return jets


def simple_btag_jets(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    jets = []
    for i in range(n):
        tracks = [
            dict(
                pt=float(rng.uniform(1, 20)),
                eta=0.1,
                phi=0.1,
                d0=0.01,
                z0=0.02,
                charge=1,
                pdg_id=211,
                vtx_index=0,
                prod_z=0.0,
            )
            for _ in range(int(rng.integers(1, 5)))
        ]
        jets.append(
            dict(jet_eta=0.0, jet_phi=0.0, jet_flav=(0, 4, 5)[i % 3], hadrons=[], tracks=tracks)
        )
    return jets


def make_source_tree(root: Path, n_jets: int = 20) -> Path:
    """A tiny raw-data tree laid out like the extracted real datasets."""
    for split, number in (("train_100M", 0), ("val_5M", 120), ("test_20M", 100)):
        jetclass_file(
            root / "jetclass" / split / f"HToBB_{number:03d}.root",
            simple_jetclass_jets(n_jets, number),
            "Hbb",
        )
        jetclass_file(
            root / "jetclass" / split / f"ZJetsToNuNu_{number:03d}.root",
            simple_jetclass_jets(n_jets, number + 1),
            "QCD",
        )
    for i, name in enumerate(("train_small", "validate_small", "test_small")):
        btag_file(root / "btag" / f"{name}.root", simple_btag_jets(n_jets, i))
    return root


@pytest.fixture
def params() -> dict:
    """The smoke profile's params, as a fresh dict each test may edit."""
    return yaml.safe_load((REPO / "profiles" / "smoke.yaml").read_text())


def run_stage(script: str, params: dict, tmp_path: Path, *args: str):
    """Run a stage CLI on `params` (written to tmp_path) from the repository root."""
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params))
    return subprocess.run(
        [sys.executable, str(REPO / "stages" / script), "--params", str(params_file), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )


def copy_repo(dest: Path) -> Path:
    """Copy the git-tracked and untracked-but-not-ignored files of the repository."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for name in filter(None, files):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def generation_params(
    jets_per_file: tuple[int, int, int], jets_per_flavour: tuple[int, int, int], workers=1
) -> dict:
    """The smoke profile with the generator's sizes (train, val, test) and workers replaced."""
    params = yaml.safe_load((REPO / "profiles" / "smoke.yaml").read_text())
    gen = params["generate"]
    gen["workers"] = workers
    gen["jetclass"]["jets_per_file"] = dict(zip(("train", "val", "test"), jets_per_file))
    gen["btag"]["jets_per_flavour"] = dict(zip(("train", "val", "test"), jets_per_flavour))
    return params


@pytest.fixture(scope="session")
def generated(tmp_path_factory) -> tuple[Path, dict]:
    """A small Pythia8 generation (raw ROOT files) shared by the tests, and its params."""
    from mpm.data.generator.run import generate, validated_config

    params = generation_params((60, 20, 40), (60, 20, 40))
    root = tmp_path_factory.mktemp("generated")
    generate(root, validated_config(params), params["seed"])
    return root, params


@pytest.fixture(scope="session")
def jetclass(tmp_path_factory, generated):
    """Converted JetClass files of `generated` and a preprocessor fitted on them, with params
    for tiny training runs."""
    raw, params = generated
    params = {**params, "loader": {"num_workers": 0}}
    params["pretrain"] = {**params["pretrain"], "n_val_jets": 100,
                          "probe_jets": {"train": 100, "test": 200}}  # fmt: skip
    root = tmp_path_factory.mktemp("pretrain_data")
    convert_dataset(params, "jetclass", raw, root / "jetclass")
    save_preprocessor(
        fit_preprocessor(root / "jetclass/train.h5", 600, 100, 100_000, 0), root / "pre.joblib"
    )
    return root, params


@pytest.fixture(scope="session")
def btag(tmp_path_factory, generated, jetclass):
    """Converted BTag files of `generated`, read with the JetClass preprocessor of `jetclass`."""
    raw, params = generated
    root = tmp_path_factory.mktemp("btag_data")
    convert_dataset(params, "btag", raw, root / "btag")
    return root / "btag", jetclass[0] / "pre.joblib"
