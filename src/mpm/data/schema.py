"""The data contract: class orders, feature orders and the ROOT branches of both datasets.

Everything downstream of `convert` reads the HDF5 layout described here; nothing relies on
file order or file-name globs for labels.
"""

# JetClass classes in the order of Particle Transformer (Qu et al. 2022); label = index.
JETCLASS_CLASSES = ("QCD", "Hbb", "Hcc", "Hgg", "H4q", "Hqql", "Zqq", "Wqq", "Tbqq", "Tbl")
# Process name in the file names <Proc>_<NNN>.root -> class.
JETCLASS_PROCESSES = {
    "ZJetsToNuNu": "QCD",
    "HToBB": "Hbb",
    "HToCC": "Hcc",
    "HToGG": "Hgg",
    "HToWW4Q": "H4q",
    "HToWW2Q1L": "Hqql",
    "ZToQQ": "Zqq",
    "WToQQ": "Wqq",
    "TTBar": "Tbqq",
    "TTBarLep": "Tbl",
}
# Splits of the extracted JetClass tars.
JETCLASS_SPLIT_DIRS = {"train": "train_100M", "val": "val_5M", "test": "test_20M"}

# BTag jet_flav {0, 4, 5} -> light / charm / bottom.
BTAG_CLASSES = ("light", "charm", "bottom")
BTAG_FLAV_TO_LABEL = {0: 0, 4: 1, 5: 2}

# The 7 continuous constituent features, in this order.
CONTINUOUS_FEATURES = ("pt", "deta", "dphi", "d0", "d0_err", "z0", "z0_err")
IMPACT_PARAMETER_FEATURES = (3, 4, 5, 6)  # indices of d0, d0_err, z0, z0_err

# The 8 particle-ID classes.
PARTICLE_IDS = (
    "photon",
    "negative_hadron",
    "neutral_hadron",
    "positive_hadron",
    "electron",
    "positron",
    "muon",
    "antimuon",
)
NEUTRAL_IDS = (0, 2)  # photons and neutral hadrons carry no impact parameters

# Per-track origin labels for BTag (track identification task); -1 marks padding.
# Same order as the flavour labels (light/charm/bottom) and as the authors' code.
TRACK_ORIGINS = ("primary", "c", "b", "other")

# Jet-level features stored per jet.
JET_FEATURES = ("pt", "eta", "phi", "mass", "n_constituents")

# ROOT inputs. Kinds: "jagged_float", "jagged_number", "float", "number" (int, bool or float).
JETCLASS_TREE = "tree"
JETCLASS_BRANCHES = {
    **{
        b: "jagged_float"
        for b in (
            "part_px",
            "part_py",
            "part_pz",
            "part_energy",
            "part_deta",
            "part_dphi",
            "part_d0val",
            "part_d0err",
            "part_dzval",
            "part_dzerr",
            "part_charge",
        )
    },
    **{
        b: "jagged_number"
        for b in (
            "part_isChargedHadron",
            "part_isNeutralHadron",
            "part_isPhoton",
            "part_isElectron",
            "part_isMuon",
        )
    },
    **{b: "float" for b in ("jet_pt", "jet_eta", "jet_phi", "jet_energy", "jet_sdmass")},
    "jet_nparticles": "number",
    **{f"label_{c}": "number" for c in JETCLASS_CLASSES},
}

BTAG_TREE = "tree"
BTAG_BRANCHES = {
    **{b: "float" for b in ("jet_pt", "jet_eta", "jet_phi", "jet_M")},
    "jet_flav": "number",
    "n_trks": "number",
    **{
        b: "jagged_float"
        for b in (
            "trk_pt",
            "trk_eta",
            "trk_phi",
            "trk_d0",
            "trk_z0",
            "trk_d0err",
            "trk_z0err",
            "trk_prod_z",
            "hadron_z",
        )
    },
    **{b: "jagged_number" for b in ("trk_charge", "trk_pdg_id", "trk_vtx_index", "hadron_pdgid")},
}

# Datasets inside each converted HDF5 file.
H5_CONSTITUENTS = "csts"  # float32 [N, P, 7], zero-padded
H5_IDS = "csts_id"  # int8 [N, P], 0-padded
H5_MASK = "mask"  # bool [N, P], True for real constituents (a prefix: pT-descending)
H5_JETS = "jets"  # float32 [N, len(JET_FEATURES)]
H5_LABELS = "labels"  # int64 [N]
H5_VERTEX = "vtx_id"  # int8 [N, P], BTag only, -1 padded
H5_ORIGIN = "track_origin"  # int8 [N, P], BTag only, -1 padded
