"""BTag-like jets: ttbar at 14 TeV, anti-kT R=0.4, pT >= 20 GeV, |eta| < 2.5, charged tracks.

Flavour: b if a weakly decaying b hadron with pT > 5 GeV lies within dR < 0.3 of the jet axis,
else c for a c hadron, else light. Tracks are the reconstructed charged candidates with
pT > 1 GeV within dR < 0.4 of the axis (jets without a track are dropped); a track (and a
hadron) near several jets belongs to the closest one only. Per track we record its true
production vertex; `trk_vtx_index` numbers the jet's vertices (0 = primary, then 1, 2, ... in
pT order of their first track), production points closer than `vertex_merge_mm` being one
vertex. The jet's weakly decaying b and c hadrons within dR < 0.4 are listed with the z of
their decay vertex, from which `convert` derives the track origin. As in the real dataset, the
three flavours are kept in equal numbers with one common (pT, |eta|, track count) histogram
(`flattened_selection`).
"""

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from mpm.data.generator.detector import Candidates, Detector
from mpm.data.generator.jets import Jets, closest_jets, cluster, same_event_pairs
from mpm.data.generator.kinematics import pt_eta_phi
from mpm.data.generator.pythia import EventRecord, EventSource
from mpm.data.generator.truth import decay_z, weak_heavy_hadrons

RADIUS = 0.4
PT_MIN = 20.0
ETA_MAX = 2.5
TRACK_PT_MIN = 1.0
TRACK_DR = 0.4
LABEL_DR = 0.3
LABEL_HADRON_PT_MIN = 5.0
FLAVOURS = (0, 4, 5)  # jet_flav of light, c and b jets
SETTINGS = ["Beams:eCM = 14000", "Top:gg2ttbar = on", "Top:qqbar2ttbar = on"]


def _near_hadrons(ev: EventRecord, jets: Jets, rows: np.ndarray, max_dr: float):
    """(jet index, index into `rows`) of the truth particles at `rows` within max_dr of a jet,
    each with its closest jet only."""
    _, eta, phi = pt_eta_phi(ev.px[rows], ev.py[rows], ev.pz[rows])
    return closest_jets(jets, ev.event[rows], eta, phi, max_dr)


def flavour_labels(ev: EventRecord, jets: Jets) -> np.ndarray:
    """jet_flav (5, 4 or 0) from the weakly decaying heavy hadrons near each jet."""
    rows, flavour = weak_heavy_hadrons(ev)
    hard = np.hypot(ev.px[rows], ev.py[rows]) > LABEL_HADRON_PT_MIN
    rows, flavour = rows[hard], flavour[hard]
    jet, item = _near_hadrons(ev, jets, rows, LABEL_DR)
    label = np.zeros(len(jets.event), np.int64)
    np.maximum.at(label, jet, flavour[item])  # b (5) beats c (4)
    return label


def _merged_vertices(jet: np.ndarray, x, y, z, merge_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Per track (tracks grouped by jet): (vertex label, whether it is the primary vertex).

    Vertices are the connected groups of production points closer than `merge_mm` to one
    another, the primary vertex at the origin being one of the points: so any two tracks of
    different vertices, and any secondary track and the origin, are at least `merge_mm` apart.
    """
    n = len(jet)
    n_jets = int(jet.max()) + 1 if n else 0
    first, second = same_event_pairs(jet, jet)  # every ordered track pair of each jet
    pair = first < second
    first, second = first[pair], second[pair]
    points = np.stack([x, y, z], axis=1)
    close = np.linalg.norm(points[first] - points[second], axis=1) < merge_mm
    at_origin = np.linalg.norm(points, axis=1) < merge_mm
    # Nodes: the tracks, then one origin node per jet.
    rows = np.concatenate([first[close], np.flatnonzero(at_origin)])
    cols = np.concatenate([second[close], n + jet[at_origin]])
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n + n_jets,) * 2)
    _, label = connected_components(graph, directed=False)
    return label[:n], label[:n] == label[n + jet]


def _vertex_index(jet: np.ndarray, x, y, z, merge_mm: float) -> np.ndarray:
    """Per track (tracks grouped by jet, pT-descending): 0 for the primary vertex, else
    1, 2, ... per secondary vertex of its jet in order of its first track."""
    label, primary = _merged_vertices(jet, x, y, z, merge_mm)
    _, first_track, inverse = np.unique(label, return_index=True, return_inverse=True)
    first = first_track[inverse.reshape(-1)]  # each track's vertex's first track
    sec = np.flatnonzero(~primary)
    # Secondary vertices sorted by their first track: jet by jet, then in track order.
    starts, vertex = np.unique(first[sec], return_inverse=True)
    vertex = vertex.reshape(-1)
    vertex_jet = jet[starts]
    out = np.zeros(len(jet), np.int64)
    out[sec] = vertex - np.searchsorted(vertex_jet, vertex_jet)[vertex] + 1
    return out


def jet_arrays(
    ev: EventRecord, cands: Candidates, jets: Jets, flav: np.ndarray, vertex_merge_mm: float
) -> dict:
    """Tracks, hadrons (flat, jet by jet, with their counts) and jet scalars, in the BTag
    branch naming without prefixes: {"trk", "hadron", "counts": {"trk", "hadron"}, "jet"}."""
    track_rows = np.flatnonzero((cands.charge != 0) & (cands.pt > TRACK_PT_MIN))
    jet, item = closest_jets(
        jets, cands.event[track_rows], cands.eta[track_rows], cands.phi[track_rows], TRACK_DR
    )
    t = track_rows[item]
    order = np.lexsort((-cands.pt[t], jet))  # jet by jet, pT descending
    jet, t = jet[order], t[order]
    truth = cands.truth[t]
    x, y, z = ev.x[truth], ev.y[truth], ev.z[truth]
    pt, eta = cands.pt[t], cands.eta[t]
    trk = {
        "pt": pt,
        "eta": eta,
        "phi": cands.phi[t],
        "ctgtheta": np.sinh(eta),
        "charge": cands.charge[t],
        "pdg_id": cands.pdg_id[t],
        "pythia_i": ev.index[truth],
        "d0": cands.d0[t],
        "z0": cands.z0[t],
        "d0err": cands.d0err[t],
        "z0err": cands.z0err[t],
        "pterr": cands.pt_err[t],
        "prod_x": x,
        "prod_y": y,
        "prod_z": z,
        "vtx_index": _vertex_index(jet, x, y, z, vertex_merge_mm),
    }
    n_trks = np.bincount(jet, minlength=len(jets.event))

    h_rows, _ = weak_heavy_hadrons(ev)
    h_jet, h_item = _near_hadrons(ev, jets, h_rows, TRACK_DR)
    r = h_rows[h_item]
    hadron = {"pdgid": ev.id[r], "z": decay_z(ev, r)}
    n_hadrons = np.bincount(h_jet, minlength=len(jets.event))

    scalars = {
        "jet_pt": jets.pt,
        "jet_eta": jets.eta,
        "jet_phi": jets.phi,
        "jet_M": jets.mass,
        "jet_flav": flav,
    }
    return {
        "trk": trk,
        "hadron": hadron,
        "counts": {"trk": n_trks, "hadron": n_hadrons},
        "jet": scalars,
    }


def select(table: dict, keep: np.ndarray) -> dict:
    """The jets of a `jet_arrays` table where `keep` is True."""
    out = {"jet": {k: v[keep] for k, v in table["jet"].items()}, "counts": {}}
    for name, counts in table["counts"].items():
        owner = np.repeat(np.arange(len(counts)), counts)
        out[name] = {k: v[keep[owner]] for k, v in table[name].items()}
        out["counts"][name] = counts[keep]
    return out


def concatenate(tables: list[dict]) -> dict:
    """Tables of consecutive jets joined into one."""
    return {
        group: {k: np.concatenate([t[group][k] for t in tables]) for k in tables[0][group]}
        for group in tables[0]
    }


def flatten_bins(table: dict, edges: dict) -> np.ndarray:
    """Bin number of each jet of a `jet_arrays` table in the (pT, |eta|, track count) grid
    whose inner bin edges are `edges` (a value on an edge belongs to the bin above)."""
    values = {
        "pt_edges": table["jet"]["jet_pt"],
        "abs_eta_edges": np.abs(table["jet"]["jet_eta"]),
        "n_trks_edges": table["counts"]["trk"],
    }
    index = [np.searchsorted(edges[k], v, side="right") for k, v in values.items()]
    return np.ravel_multi_index(index, [len(edges[k]) + 1 for k in values])


def flattened_selection(flavour: np.ndarray, bins: np.ndarray, n: int) -> np.ndarray | None:
    """Mask of `n` jets of each flavour (0, 1, 2) with the same number of jets in every bin, or
    None while the jets do not hold that many.

    The k-th jets of each flavour in a bin (in the jets' order) form that bin's k-th slot; a
    slot is complete once every flavour has its k-th jet, and the `n` slots completed first
    are kept: the choice of a stream of jets stopped at its n-th complete slot.
    """
    n_bins = int(bins.max()) + 1 if len(bins) else 0
    per_flavour = [np.bincount(bins[flavour == f], minlength=n_bins) for f in range(len(FLAVOURS))]
    if np.min(per_flavour, axis=0).sum() < n:  # the number of complete slots
        return None
    position = np.arange(len(bins))
    order = np.lexsort((position, bins, flavour))
    group = flavour[order] * n_bins + bins[order]
    new = np.ones(len(order), bool)
    new[1:] = group[1:] != group[:-1]
    rank = np.empty(len(bins), np.int64)
    rank[order] = position - np.flatnonzero(new)[np.cumsum(new) - 1]
    slots, member = np.unique(bins * len(bins) + rank, return_inverse=True)
    member = member.reshape(-1)
    done_at = np.zeros(len(slots), np.int64)
    np.maximum.at(done_at, member, position)
    complete = np.flatnonzero(np.bincount(member) == len(FLAVOURS))
    first_done = complete[np.argsort(done_at[complete])[:n]]
    return np.isin(member, first_done)


def generate_chunk(
    n_per_flavour: int,
    seed: int,
    physics_settings: list[str],
    detector: Detector,
    vertex_merge_mm: float,
    flatten_edges: dict,
    events_per_batch: int,
    rng: np.random.Generator,
) -> tuple[dict, int]:
    """`n_per_flavour` jets of each flavour with one common (pT, |eta|, track count) histogram:
    (a `jet_arrays` table, events generated).

    The real dataset resamples its flavours to a common distribution; we keep every jet until
    the jets hold `n_per_flavour` per flavour with one histogram, and take those
    (`flattened_selection`). c jets are the scarcest in ttbar (0.6 per event, against 1.6 b
    and 2.8 light jets), so the common histogram is close to theirs and few events are
    added: ~20% more than for the first jets of each flavour with the default bins.
    """
    source = EventSource([*SETTINGS, *physics_settings], seed)
    tables, flavours, bins = [], [], []
    while True:
        ev = source.next(events_per_batch)
        cands = detector.reconstruct(ev, rng)
        jets = cluster(cands, RADIUS, PT_MIN)
        jets = jets.select(np.abs(jets.eta) < ETA_MAX)
        flav = flavour_labels(ev, jets)
        table = jet_arrays(ev, cands, jets, flav, vertex_merge_mm)
        table = select(table, table["counts"]["trk"] > 0)
        tables.append(table)
        flavours.append(np.searchsorted(FLAVOURS, table["jet"]["jet_flav"]))
        bins.append(flatten_bins(table, flatten_edges))
        keep = flattened_selection(np.concatenate(flavours), np.concatenate(bins), n_per_flavour)
        if keep is not None:
            return select(concatenate(tables), keep), source.events
