"""ROOT -> HDF5 conversion: hand-computed features, labels, layout and bad inputs."""

from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import btag_file, jetclass_file, make_source_tree, run_stage
from mpm.data import schema
from mpm.data.convert import convert_dataset, convert_split, dataset_spec
from mpm.errors import InputError


def convert_files(paths, params, name, out, **overrides) -> dict:
    """convert_split with small, test-friendly settings; returns its summary."""
    settings = dict(seed=0, step_size=100, max_jets_per_file=None, bucket_jets=1000,
                    empty_jets="error", compression=None) | overrides  # fmt: skip
    return convert_split(paths, dataset_spec(name, params["convert"][name]), out, **settings)


def convert_one(path: Path, params: dict, name: str, out: Path) -> h5py.File:
    convert_files([path], params, name, out)
    return h5py.File(out)


def rows_by_eta(file: h5py.File) -> dict[float, int]:
    """The output is shuffled; find each jet by its (distinct) eta."""
    return {round(float(eta), 3): i for i, eta in enumerate(file["jets"][:, 1])}


def _particle(kind, charge, px, py, deta, dphi, d0val=0.0, dzval=0.0):
    return dict(kind=kind, charge=charge, px=px, py=py, deta=deta, dphi=dphi, d0val=d0val,
                dzval=dzval)  # fmt: skip


# Hand-computed cases. Positive-eta jet: deta is as stored; negative-eta jet: the stored
# part_deta is sign(jet_eta) * (eta - jet_eta), so the true eta_trk - eta_jet is -deta.
JETCLASS_JETS = [
    dict(jet_eta=1.0, jet_phi=0.5, particles=[
        _particle("hadron", 1.0, 3.0, 4.0, 0.1, 0.2, d0val=0.05, dzval=-0.3),
        _particle("photon", 0.0, 6.0, 8.0, -0.9, 0.05),
        _particle("electron", -1.0, 0.0, 1.0, 0.05, -0.1, d0val=-0.02, dzval=0.4),
    ]),
    dict(jet_eta=-1.5, jet_phi=-2.0, particles=[
        _particle("hadron", -1.0, 2.0, 0.0, 0.2, -0.3, d0val=0.1, dzval=0.5),
        _particle("neutral", 0.0, 1.0, 0.0, 0.0, 0.0),
        _particle("muon", 1.0, 0.0, 3.0, -0.1, 0.1, d0val=-0.2, dzval=-0.1),
    ]),
    dict(jet_eta=0.3, jet_phi=0.0, particles=[
        _particle("muon", -1.0, 1.0, 1.0, 0.0, 0.0),
        _particle("electron", 1.0, 2.0, 0.0, 0.0, 0.0),
    ]),
]  # fmt: skip


def test_jetclass_features_hand_computed(tmp_path, params):
    path = jetclass_file(tmp_path / "HToBB_000.root", JETCLASS_JETS, "Hbb")
    with convert_one(path, params, "jetclass", tmp_path / "out.h5") as f:
        row = rows_by_eta(f)
        csts, ids, mask = f["csts"][:], f["csts_id"][:], f["mask"][:]
        assert csts.shape == (3, 128, 7) and mask.shape == (3, 128)
        assert (f["labels"][:] == schema.JETCLASS_CLASSES.index("Hbb")).all()

        j = row[1.0]  # pT order: photon (10), hadron (5), electron (1)
        np.testing.assert_allclose(csts[j, :3, 0], [10.0, 5.0, 1.0], rtol=1e-6)
        np.testing.assert_array_equal(ids[j, :3], [0, 3, 4])
        np.testing.assert_array_equal(mask[j, :4], [True, True, True, False])
        np.testing.assert_allclose(csts[j, 0, 1:3], [-0.8, 0.05], rtol=1e-6)  # deta clipped
        np.testing.assert_allclose(csts[j, 0, 3:], 0.0)  # photon: no impact parameters
        # hadron: d0 sign(0.05 sin 0.2) = +; z0 sign(-0.3 * (0 - 0.1)) = +
        np.testing.assert_allclose(csts[j, 1, 3:], [0.05, 0.01, 0.3, 0.02], rtol=1e-6)
        # electron: d0 sign(-0.02 sin -0.1) = +; z0 sign(0.4 * -0.05) = -
        np.testing.assert_allclose(csts[j, 2, 3:], [0.02, 0.01, -0.4, 0.02], rtol=1e-6)
        assert (csts[j, 3:] == 0).all() and (ids[j, 3:] == 0).all()

        j = row[-1.5]  # negative eta; pT order: muon (3), hadron (2), neutral (1)
        np.testing.assert_array_equal(ids[j, :3], [7, 1, 2])
        # hadron: true eta_trk - eta_jet = -0.2, so z0 sign(0.5 * 0.2) = + (a missed flip gives -)
        # d0 sign(0.1 sin -0.3) = -
        np.testing.assert_allclose(csts[j, 1, 1:], [0.2, -0.3, -0.1, 0.01, 0.5, 0.02], rtol=1e-6)
        # muon: true eta_rel = +0.1 -> z0 sign(-0.1 * -0.1) = +; d0 sign(-0.2 sin 0.1) = -
        np.testing.assert_allclose(csts[j, 0, 3:], [-0.2, 0.01, 0.1, 0.02], rtol=1e-6)

        j = row[0.3]
        np.testing.assert_array_equal(ids[j, :2], [5, 6])  # positron (pT 2), muon- (pT 1.41)
        np.testing.assert_allclose(f["jets"][j], [600.0, 0.3, 0.0, 125.0, 2.0], rtol=1e-6)


def test_jetclass_truncates_to_the_hardest_128(tmp_path, params):
    particles = [
        dict(kind="hadron", charge=1.0, px=float(i + 1), py=0.0, deta=0.0, dphi=0.0)
        for i in range(150)
    ]
    path = jetclass_file(tmp_path / "f.root", [dict(jet_eta=0.5, jet_phi=0.0, particles=particles)])
    with convert_one(path, params, "jetclass", tmp_path / "out.h5") as f:
        assert f["mask"][0].all()
        np.testing.assert_allclose(f["csts"][0, :, 0], np.arange(150, 22, -1), rtol=1e-6)
        assert f["jets"][0, 4] == 150  # the jet keeps its true multiplicity


def test_jetclass_labels_follow_branches_not_file_names(tmp_path, params):
    # A file named like TTBar but labelled Tbl by its branches is Tbl: labels never come
    # from names or globs.
    path = jetclass_file(tmp_path / "TTBar_000.root", JETCLASS_JETS, "Tbl")
    with convert_one(path, params, "jetclass", tmp_path / "out.h5") as f:
        assert (f["labels"][:] == schema.JETCLASS_CLASSES.index("Tbl")).all()


def _track(pt, eta, phi, d0, z0, charge, pdg_id, vtx_index, prod_z):
    return dict(pt=pt, eta=eta, phi=phi, d0=d0, z0=z0, charge=charge, pdg_id=pdg_id,
                vtx_index=vtx_index, prod_z=prod_z)  # fmt: skip


# A negative-eta b-jet whose first track's phi wraps around pi; a light and a charm jet.
# Hadrons are (pdg id, z); the track at z = 1.5 matches both a b and a c hadron.
BTAG_JETS = [
    dict(jet_eta=-1.0, jet_phi=3.0, jet_flav=5, hadrons=[(521, 1.5), (421, 2.5), (4122, 1.5)],
         tracks=[_track(10.0, -1.1, -3.1, 0.2, 0.3, 1, 211, 0, 0.0),
                 _track(8.0, -1.0, 3.0, 0.0, 0.0, -1, 11, 1, 1.5),
                 _track(6.0, -1.0, 3.0, 0.0, 0.0, 1, -13, 2, 2.5),
                 _track(4.0, -1.0, 3.0, 0.0, 0.0, -1, 321, 3, 7.0)]),
    dict(jet_eta=0.5, jet_phi=0.0, jet_flav=0, hadrons=[],
         tracks=[_track(2.0, 0.6, -0.1, -0.1, -0.2, 1, 2212, 0, 0.0)]),
    dict(jet_eta=1.5, jet_phi=0.0, jet_flav=4, hadrons=[(-411, 3.0)],
         tracks=[_track(3.0, 1.5, 0.0, 0.0, 0.0, 1, 211, 1, 3.0)]),
]  # fmt: skip


def test_btag_features_labels_and_track_origins(tmp_path, params):
    path = btag_file(tmp_path / "train_small.root", BTAG_JETS)
    with convert_one(path, params, "btag", tmp_path / "out.h5") as f:
        row = rows_by_eta(f)
        assert f["csts"].shape == (3, 15, 7)
        j = row[-1.0]
        assert f["labels"][j] == schema.BTAG_CLASSES.index("bottom")
        # phi wraps: -3.1 - 3.0 + 2 pi; deta = sign(-1) * (-1.1 + 1.0) = +0.1
        dphi = -3.1 - 3.0 + 2 * np.pi
        np.testing.assert_allclose(
            f["csts"][j, 0], [10.0, 0.1, dphi, 0.2, 0.01, 0.3, 0.02], rtol=1e-5, atol=1e-6
        )
        np.testing.assert_array_equal(f["csts_id"][j, :4], [3, 4, 7, 1])
        np.testing.assert_array_equal(f["vtx_id"][j, :5], [0, 1, 2, 3, -1])
        origins = [schema.TRACK_ORIGINS[o] for o in f["track_origin"][j, :4]]
        assert origins == ["primary", "b", "c", "other"]  # b wins over the c at z = 1.5
        assert f["track_origin"][j, 4] == -1

        j = row[0.5]
        assert f["labels"][j] == schema.BTAG_CLASSES.index("light")
        # d0 sign(-0.1 sin -0.1) = +; z0 sign(-0.2 * (0.5 - 0.6)) = +
        np.testing.assert_allclose(f["csts"][j, 0, 3:], [0.1, 0.01, 0.2, 0.02], rtol=1e-5)
        j = row[1.5]
        assert f["labels"][j] == schema.BTAG_CLASSES.index("charm")
        assert schema.TRACK_ORIGINS[f["track_origin"][j, 0]] == "c"


def test_convert_dataset_is_seeded_and_complete(tmp_path, params):
    root = make_source_tree(tmp_path / "raw", n_jets=30)
    a = convert_dataset(params, "jetclass", root, tmp_path / "a")
    b = convert_dataset(params, "jetclass", root, tmp_path / "b")
    assert a == b and a["train"]["per_class"]["Hbb"] == 30 and a["train"]["n_jets"] == 60
    with h5py.File(tmp_path / "a/train.h5") as fa, h5py.File(tmp_path / "b/train.h5") as fb:
        np.testing.assert_array_equal(fa["csts"][:], fb["csts"][:])
        labels = fa["labels"][:]
        assert not (np.all(labels[:30] == labels[0]))  # the classes are mixed
    params["seed"] += 1
    convert_dataset(params, "jetclass", root, tmp_path / "c")
    with h5py.File(tmp_path / "a/train.h5") as fa, h5py.File(tmp_path / "c/train.h5") as fc:
        assert not np.array_equal(fa["labels"][:], fc["labels"][:])
        # same jets, another order
        np.testing.assert_allclose(np.sort(fa["jets"][:, 1]), np.sort(fc["jets"][:, 1]))
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["test.h5", "train.h5", "val.h5"]


def test_external_shuffle_with_many_buckets_keeps_every_jet(tmp_path, params):
    root = make_source_tree(tmp_path / "raw", n_jets=50)
    params["convert"]["bucket_jets"] = 7  # 100 jets -> 15 buckets
    params["convert"]["step_size"] = 9
    convert_dataset(params, "jetclass", root, tmp_path / "out")
    with h5py.File(tmp_path / "out/train.h5") as f:
        assert f["labels"].shape == (100,)
        assert np.bincount(f["labels"][:]).tolist()[:2] == [50, 50]


def test_the_shuffle_buckets_are_compressed_even_for_an_uncompressed_output(tmp_path, params):
    root = make_source_tree(tmp_path / "raw", n_jets=200)
    params["convert"]["bucket_jets"] = 50  # 400 jets -> 8 buckets
    params["convert"]["compression"] = None
    summary = convert_dataset(params, "jetclass", root, tmp_path / "out")["train"]
    with h5py.File(tmp_path / "out/train.h5") as f:
        raw_bytes = sum(f[k].id.get_storage_size() for k in f)  # uncompressed output
    # padded jets are mostly zeros: lzf buckets take a fraction of the raw rows
    assert summary["bucket_bytes"] < 0.5 * raw_bytes
    assert summary["file_bytes"] == (tmp_path / "out/train.h5").stat().st_size


# ---- bad inputs: one line naming the file/field/param, non-zero exit, no partial output ----


def _break_and_convert(tmp_path, params, breaker, dataset="jetclass"):
    root = make_source_tree(tmp_path / "raw")
    breaker(root)
    out, metrics = tmp_path / "out", tmp_path / "m.json"
    proc = run_stage(
        "convert.py",
        params,
        tmp_path,
        "--dataset",
        dataset,
        "--generated",
        str(root),
        "--out",
        str(out),
        "--metrics",
        str(metrics),
    )
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: convert: "), proc.stderr
    assert proc.stderr.rstrip().endswith(errors[0])
    assert not out.exists() and not metrics.exists()
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert not leftovers
    return errors[0]


JC_TRAIN = "jetclass/train_100M/HToBB_000.root"


def _rewrite_jetclass(root, **changes):
    jets = [
        dict(
            jet_eta=0.5,
            jet_phi=0.0,
            particles=[
                dict(
                    kind=changes.get("kind", "hadron"),
                    charge=changes.get("charge", 1.0),
                    px=changes.get("px", 1.0),
                    py=1.0,
                    deta=0.0,
                    dphi=0.0,
                )
            ],
        )
    ]
    jetclass_file(root / JC_TRAIN, jets)


def test_error_missing_input_folder(tmp_path, params):
    import shutil

    msg = _break_and_convert(tmp_path, params, lambda r: shutil.rmtree(r / "jetclass" / "val_5M"))
    assert "val_5M" in msg and "not found" in msg


def test_error_missing_branch(tmp_path, params):
    def drop_branch(root):
        import uproot

        path = root / JC_TRAIN
        arrays = uproot.open(path)["tree"].arrays()
        from mpm.data.root_io import write_tree

        scalars = {
            k: arrays[k].to_numpy()
            for k in arrays.fields
            if not k.startswith(("part_", "npart")) and k != "jet_sdmass"
        }
        part = {k[5:]: arrays[k] for k in arrays.fields if k.startswith("part_")}
        write_tree(path, "tree", scalars, {"part": part}, {"part": "npart"})

    msg = _break_and_convert(tmp_path, params, drop_branch)
    assert "HToBB_000.root" in msg and "jet_sdmass" in msg


def test_error_inf_value(tmp_path, params):
    msg = _break_and_convert(tmp_path, params, lambda r: _rewrite_jetclass(r, px=float("inf")))
    assert "part_px" in msg


def test_empty_jets_can_be_dropped(tmp_path, params):
    jets = [dict(jet_eta=0.5, jet_phi=0.0, particles=[]), JETCLASS_JETS[0]]
    path = jetclass_file(tmp_path / "f.root", jets)
    summary = convert_files([path], params, "jetclass", tmp_path / "o.h5", empty_jets="drop")
    assert summary["n_jets"] == 1 and summary["n_dropped_empty"] == 1


def test_error_wrong_dtype(tmp_path, params):
    def float_flags(root):
        import awkward as ak
        import uproot

        from mpm.data.root_io import write_tree

        path = root / JC_TRAIN
        arrays = uproot.open(path)["tree"].arrays()
        scalars = {
            k: arrays[k].to_numpy() for k in arrays.fields if not k.startswith(("part_", "npart"))
        }
        scalars["jet_pt"] = scalars["jet_pt"].astype(np.int32)  # jet_pt must be a float
        part = {k[5:]: arrays[k] for k in arrays.fields if k.startswith("part_")}
        part = {k: ak.values_astype(v, np.float32) for k, v in part.items()}
        write_tree(path, "tree", scalars, {"part": part}, {"part": "npart"})

    msg = _break_and_convert(tmp_path, params, float_flags)
    assert "jet_pt" in msg and "expected float" in msg


def test_error_particle_without_type_flag(tmp_path, params):
    msg = _break_and_convert(
        tmp_path, params, lambda r: _rewrite_jetclass(r, kind="hadron", charge=0.0)
    )
    assert "part_charge" in msg


def test_error_unknown_btag_flavour(tmp_path, params):
    def bad_flav(root):
        jets = [dict(BTAG_JETS[1], jet_flav=3)]
        btag_file(root / "btag" / "train_small.root", jets)

    msg = _break_and_convert(tmp_path, params, bad_flav, dataset="btag")
    assert "train_small.root" in msg and "jet_flav" in msg


@pytest.mark.parametrize(
    "key, value, name",
    [
        (("convert", "jetclass", "max_constituents"), 0, "convert.jetclass.max_constituents"),
        (("convert", "empty_jets"), "ignore", "convert.empty_jets"),
        (("convert", "bucket_jets"), -5, "convert.bucket_jets"),
        (("convert", "compression"), "zip", "convert.compression"),
        (("data", "source"), "internet", "data.source"),
        (("convert", "jetclass", "inputs", "val"), [], "convert.jetclass.inputs.val"),
    ],
)
def test_error_invalid_params(tmp_path, params, key, value, name):
    node = params
    for k in key[:-1]:
        node = node[k]
    node[key[-1]] = value
    msg = _break_and_convert(tmp_path, params, lambda r: None)
    assert name in msg


def test_library_raises_input_error_for_missing_file(tmp_path, params):
    with pytest.raises(InputError, match="nope.root: file not found"):
        convert_files([tmp_path / "nope.root"], params, "jetclass", tmp_path / "o.h5")
