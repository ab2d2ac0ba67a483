"""The Pythia8 + FastJet generator: schema, layout, balance, determinism, detector, physics."""

import hashlib
from dataclasses import replace

import numpy as np
import pytest
import uproot

from conftest import generation_params
from mpm.data import schema
from mpm.data.convert import convert_dataset
from mpm.data.generator import btag as btag_gen
from mpm.data.generator.detector import CHARGED_HADRON, NEUTRAL_HADRON, PHOTON, Detector
from mpm.data.generator.pythia import EventRecord
from mpm.data.generator.run import (
    generate,
    plan,
    run_chunk,
    settings_from_config,
    validated_config,
)
from mpm.data.generator.truth import decay_products, heavy_flavour
from mpm.data.root_io import open_tree
from mpm.data.sanity import btag_arrays, btag_raw_arrays, jetclass_arrays, summarise
from mpm.errors import InputError

SPLIT_FILES = {"train_100M": 0, "val_5M": 120, "test_20M": 100}


def test_layout_names_and_schema_of_jetclass_files(generated):
    root, params = generated
    sizes = params["generate"]["jetclass"]["jets_per_file"]
    for split_dir, number in SPLIT_FILES.items():
        names = {p.name for p in (root / "jetclass" / split_dir).iterdir()}
        assert names == {f"{proc}_{number:03d}.root" for proc in schema.JETCLASS_PROCESSES}
        split = {"train_100M": "train", "val_5M": "val", "test_20M": "test"}[split_dir]
        for proc, label in schema.JETCLASS_PROCESSES.items():
            path = root / "jetclass" / split_dir / f"{proc}_{number:03d}.root"
            file, tree = open_tree(path, schema.JETCLASS_TREE, schema.JETCLASS_BRANCHES)
            with file:
                a = tree.arrays(library="np")
                assert tree.num_entries == sizes[split]
                # The real files' mixed label dtypes, one class per file.
                assert a["label_QCD"].dtype == np.float32 and a["label_Hbb"].dtype == bool
                assert a["label_Tbqq"].dtype == np.int32
                assert (a[f"label_{label}"] == 1).all()
                others = [c for c in schema.JETCLASS_CLASSES if c != label]
                assert not any(a[f"label_{c}"].any() for c in others)
                assert ((a["jet_pt"] > 500) & (a["jet_pt"] < 1000)).all()
                assert (np.abs(a["jet_eta"]) < 2).all()
                n = np.array([len(p) for p in a["part_px"]])
                assert (n == a["jet_nparticles"]).all() and (n <= 128).all() and (n > 0).all()
                assert (a["jet_sdmass"] >= 0).all() and (a["jet_tau2"] <= a["jet_tau1"]).all()


def test_btag_files_schema_and_flavour_balance(generated):
    root, params = generated
    sizes = params["generate"]["btag"]["jets_per_flavour"]
    for split, name in (
        ("train", "train_small"),
        ("val", "validate_small"),
        ("test", "test_small"),
    ):
        file, tree = open_tree(root / "btag" / f"{name}.root", schema.BTAG_TREE,
                               schema.BTAG_BRANCHES)  # fmt: skip
        with file:
            a = tree.arrays(library="np")
        assert np.bincount(a["jet_flav"]).tolist() == [sizes[split], 0, 0, 0, sizes[split],
                                                        sizes[split]]  # fmt: skip
        assert (a["jet_pt"] >= 20).all() and (np.abs(a["jet_eta"]) < 2.5).all()
        assert (a["n_trks"] >= 1).all()
        pt = np.concatenate(a["trk_pt"])
        assert (pt > 1).all()
        vtx = np.concatenate(a["trk_vtx_index"])
        prod = np.concatenate(a["trk_prod_z"])
        assert ((vtx == 0) == (np.abs(prod) < 1e-6)).mean() > 0.99


def test_generated_data_converts_with_labels_as_configured(generated, tmp_path):
    root, params = generated
    summary = convert_dataset(params, "jetclass", root, tmp_path / "jetclass")
    assert (
        summary["train"]["n_jets"] == 10 * params["generate"]["jetclass"]["jets_per_file"]["train"]
    )
    summary = convert_dataset(params, "btag", root, tmp_path / "btag")
    assert summary["test"]["n_jets"] == 3 * params["generate"]["btag"]["jets_per_flavour"]["test"]
    btag = btag_arrays(tmp_path / "btag/train.h5", 10_000)
    jetclass = jetclass_arrays(tmp_path / "jetclass/train.h5", 10_000, 0.8)
    assert np.bincount(jetclass["label"]).tolist() == [60] * 10
    metrics = summarise(jetclass, btag, btag_raw_arrays(root / "btag/train_small.root", 10_000))
    # Physics: lifetime-signed d0 significance has a far larger positive tail for b jets.
    tail = {k: v["d0_significance_tail"] for k, v in metrics["btag"].items()}
    assert tail["bottom"] > 3 * tail["light"] and tail["bottom"] > tail["charm"]
    svs = {k: v["mean_secondary_vertices"] for k, v in metrics["btag"].items()}
    assert svs["bottom"] > svs["charm"] > svs["light"]
    # Jet mass peaks of the resonant classes, QCD low.
    # Two-prong W jets have a smaller tau_2/tau_1 than QCD jets.
    tau21 = {}
    for proc in ("ZJetsToNuNu", "WToQQ"):
        path = root / "jetclass/train_100M" / f"{proc}_000.root"
        taus = uproot.open(path)["tree"].arrays(["jet_tau1", "jet_tau2"], library="np")
        tau21[schema.JETCLASS_PROCESSES[proc]] = np.median(taus["jet_tau2"] / taus["jet_tau1"])
    assert tau21["Wqq"] < 0.8 * tau21["QCD"]
    mass = {k: v["median_mass"] for k, v in metrics["jetclass"].items()}
    assert 150 < mass["Tbqq"] < 190 and 105 < mass["Hbb"] < 135
    assert 70 < mass["Wqq"] < 95 and 80 < mass["Zqq"] < 100 and mass["QCD"] < 60


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_seed_same_bytes_whatever_the_worker_count(tmp_path):
    params = generation_params((4, 1, 1), (2, 1, 1))
    params["generate"]["chunk_jets"] = 3  # two chunks for the train files
    params["generate"]["events_per_batch"] = 10
    cfg = validated_config(params)
    generate(tmp_path / "a", cfg, 7, 1e-6)
    cfg["workers"] = 2
    generate(tmp_path / "b", cfg, 7, 1e-6)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.root"))
    assert len(files) == 33
    assert all(_sha(tmp_path / "a" / f) == _sha(tmp_path / "b" / f) for f in files)
    # Another seed, other jets.
    settings = replace(settings_from_config(cfg, 7, 1e-6), seed=8)
    chunk = plan(cfg)[0][1][0]
    other, _, _ = run_chunk(settings, chunk)
    with uproot.open(tmp_path / "a" / plan(cfg)[0][0]) as f:
        first_pt = f["tree"]["jet_pt"].array(library="np")
    assert not np.allclose(other["jet"]["jet_pt"][:3], first_pt[:3])


@pytest.mark.parametrize(
    "key, value, name",
    [
        (("workers",), 0, "generate.workers"),
        (("physics", "mpi"), "yes", "generate.physics.mpi"),
        (("detector", "track_efficiency", "barrel"), 1.5, "track_efficiency.barrel"),
        (("jetclass", "jets_per_file", "val"), 0, "generate.jetclass.jets_per_file.val"),
        (("btag", "jets_per_flavour", "test"), -3, "generate.btag.jets_per_flavour.test"),
    ],
)
def test_invalid_generator_params_are_named(key, value, name):
    params = generation_params((1, 1, 1), (1, 1, 1))
    node = params["generate"]
    for k in key[:-1]:
        node = node[k]
    node[key[-1]] = value
    with pytest.raises(InputError, match=name.replace(".", r"\.")):
        validated_config(params)


def _record(rows: list[tuple]) -> EventRecord:
    """One event from (id, status, px, py, pz, x, y, z, charge) rows."""
    a = np.array(rows, dtype=float)
    n = len(a)
    pid = a[:, 0].astype(np.int64)
    e = np.sqrt((a[:, 2:5] ** 2).sum(1) + 0.14**2 * (pid != 22))
    return EventRecord(
        counts=np.array([n]), event=np.zeros(n, np.int64), index=np.arange(n), id=pid,
        status=a[:, 1].astype(np.int64), mother1=np.zeros(n, np.int64),
        daughter1=np.zeros(n, np.int64), px=a[:, 2], py=a[:, 3], pz=a[:, 4], e=e,
        x=a[:, 5], y=a[:, 6], z=a[:, 7], charge=a[:, 8], tau0=np.zeros(n),
    )  # fmt: skip


def _ideal_detector(**overrides) -> Detector:
    cfg = validated_config(generation_params((1, 1, 1), (1, 1, 1)))["detector"]
    cfg = {**cfg, "track_efficiency": {"low_pt": 1.0, "barrel": 1.0, "endcap": 1.0}}
    zero = {"a": 0.0, "b": 0.0}
    cfg.update(track_pt_resolution=zero, d0_resolution=zero, z0_resolution=zero)
    cfg.update(ecal={"stochastic": 0.0, "constant": 0.0, "threshold": 0.5})
    cfg.update(hcal={"stochastic": 0.0, "constant": 0.0, "threshold": 1.0})
    return Detector.from_params({**cfg, **overrides})


def test_detector_impact_parameters_and_candidate_kinds():
    ev = _record([
        # A pi+ produced at x = 1 mm moving along +y: d0 = (x*py - y*px)/pT = +1 mm, and its
        # point of closest approach d0*(sin(phi), -cos(phi)) = (1, 0) is the vertex itself.
        (211, 91, 0.0, 10.0, 5.0, 1.0, 0.0, 2.0, 1.0),
        # A pi- from (0, 2, 3) moving along +x: d0 = -2 mm; z0 = z - (x px + y py)/pT * pz/pT.
        (-211, 91, 20.0, 0.0, 10.0, 0.0, 2.0, 3.0, -1.0),
        (22, 91, 5.0, 5.0, 0.0, 0.0, 0.0, 0.0, 0.0),  # photon
        (130, 91, 0.0, 5.0, 5.0, 0.0, 0.0, 0.0, 0.0),  # K0L: neutral hadron
        (22, 91, 0.2, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0),  # below the ECAL threshold
        (12, 91, 50.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0),  # neutrino: invisible
        (2, -23, 5.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0),  # not final state
    ])  # fmt: skip
    c = _ideal_detector().reconstruct(ev, np.random.default_rng(0))
    assert c.kind.tolist() == [CHARGED_HADRON, CHARGED_HADRON, PHOTON, NEUTRAL_HADRON]
    np.testing.assert_allclose(c.d0, [1.0, -2.0, 0.0, 0.0])
    np.testing.assert_allclose(c.z0, [2.0, 3.0, 0.0, 0.0])
    # Calorimeter candidates are massless: E is kept, so the K0L's pT grows by ~m^2/2p^2.
    np.testing.assert_allclose(c.pt, [10.0, 20.0, np.hypot(5, 5), 5.0], rtol=1e-3)
    assert c.charge.tolist() == [1.0, -1.0, 0.0, 0.0]
    # Without tracking, the pion goes to the HCAL as a neutral hadron.
    untracked = _ideal_detector(track_efficiency={"low_pt": 0, "barrel": 0, "endcap": 0})
    c = untracked.reconstruct(ev, np.random.default_rng(0))
    assert c.kind.tolist() == [NEUTRAL_HADRON] * 2 + [PHOTON, NEUTRAL_HADRON]
    assert (c.d0 == 0).all() and (c.charge == 0).all()


def test_detector_smearing_is_seeded_and_has_the_configured_width():
    n = 20_000
    ev = _record([(211, 91, 30.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)] * n)
    det = _ideal_detector(d0_resolution={"a": 0.01, "b": 0.3})  # sigma = 0.01 (+) 0.3/30
    a = det.reconstruct(ev, np.random.default_rng(1))
    b = det.reconstruct(ev, np.random.default_rng(1))
    np.testing.assert_array_equal(a.d0, b.d0)
    expected = np.hypot(0.01, 0.01)
    np.testing.assert_allclose(a.d0err, expected)
    assert abs(a.d0.std() / expected - 1) < 0.03 and abs(a.d0.mean()) < 3 * expected / np.sqrt(n)


def test_heavy_flavour_from_pdg_ids():
    ids = np.array([511, -521, 5122, 421, -4122, 431, 211, 2212, 553, 443, 22, 5])
    assert heavy_flavour(ids).tolist() == [5, 5, 5, 4, 4, 4, 0, 0, 5, 4, 0, 0]


def test_vertex_index_numbers_secondaries_per_jet():
    jet = np.array([0, 0, 0, 0, 1, 1, 1])
    x = np.array([0.0, 0.5, 0.0, 0.5, 0.3, 0.0, 0.7])
    z = np.array([0.0, 1.0, 0.0, 1.0, 2.0, 0.0, 2.0])
    index = btag_gen._vertex_index(jet, x, np.zeros(7), z, 1e-6)
    assert index.tolist() == [0, 1, 0, 1, 1, 0, 2]


def test_top_decay_products_group_by_top():
    from mpm.data.generator.jetclass import process
    from mpm.data.generator.pythia import EventSource

    settings = ["Beams:eCM = 13000", "PhaseSpace:pTHatMin = 450", "PartonLevel:MPI = off"]
    source = EventSource([*settings, *process("Tbqq", 0).settings], seed=3)
    ev = source.next(5)
    rows, root, root_id = decay_products(ev)
    assert (root_id == 6).all()
    for e in range(5):
        roots = root[ev.event[rows] == e]
        # two tops, each with its b and the two quarks of its W
        assert sorted(np.unique(roots, return_counts=True)[1].tolist()) == [3, 3]
        assert set(np.abs(ev.id[roots])) == {6}
