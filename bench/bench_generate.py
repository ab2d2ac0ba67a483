"""Benchmark of the Pythia8 + FastJet generator: jets/s on one core per JetClass class and for
BTag, and what switching multi-parton interactions (MPI) on changes, in speed and in physics
(jet mass and constituent multiplicity).

Uses the default profile's generator settings (params.yaml); prints a table and records it in
results/bench/generate.json.

    python bench/bench_generate.py [--jets 500] [--mpi-jets 400]
"""

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import yaml

from mpm.data import schema
from mpm.data.generator import btag, jetclass
from mpm.data.generator.detector import Detector
from mpm.data.generator.pythia import physics_settings

REPO = Path(__file__).resolve().parents[1]
MPI_CLASSES = ("QCD", "Hbb", "Wqq", "Tbqq")


def _jetclass(label: str, n: int, gen: dict, physics: dict) -> tuple[dict, float, int]:
    tic = time.process_time()
    _, jet, events = jetclass.generate_chunk(
        label, n, seed=1, chunk=0, physics_settings=physics_settings(physics),
        detector=Detector.from_params(gen["detector"]),
        pt_hat_min=gen["jetclass"]["pt_hat_min"], events_per_batch=gen["events_per_batch"],
        rng=np.random.default_rng(0),
    )  # fmt: skip
    return jet, n / (time.process_time() - tic), events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jets", type=int, default=500, help="jets per class for the speed")
    parser.add_argument("--mpi-jets", type=int, default=400, help="jets per class, MPI study")
    parser.add_argument("--out", default=str(REPO / "results/bench/generate.json"))
    args = parser.parse_args()
    gen = yaml.safe_load((REPO / "params.yaml").read_text())["generate"]
    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "physics": gen["physics"],
        "jets_per_s_per_core": {},
        "events_per_jet": {},
    }
    for label in schema.JETCLASS_CLASSES:
        _, rate, events = _jetclass(label, args.jets, gen, gen["physics"])
        results["jets_per_s_per_core"][label] = round(rate, 1)
        results["events_per_jet"][label] = round(events / args.jets, 2)
        print(f"JetClass {label:<5} {rate:7.1f} jets/s per core, {events / args.jets:.2f} ev/jet")
    tic = time.process_time()
    per_flavour = args.jets
    _, events = btag.generate_chunk(
        per_flavour, seed=1, physics_settings=physics_settings(gen["physics"]),
        detector=Detector.from_params(gen["detector"]),
        vertex_merge_mm=gen["btag"]["vertex_merge_mm"], flatten_edges=gen["btag"]["flatten"],
        events_per_batch=gen["events_per_batch"], rng=np.random.default_rng(0),
    )  # fmt: skip
    rate = 3 * per_flavour / (time.process_time() - tic)
    results["jets_per_s_per_core"]["BTag"] = round(rate, 1)
    results["events_per_jet"]["BTag"] = round(events / (3 * per_flavour), 2)
    print(f"BTag           {rate:7.1f} jets/s per core")

    # MPI off (our default) against on, same seed and detector.
    study = {}
    for label in MPI_CLASSES:
        row = {}
        for mpi in (False, True):
            jet, rate, _ = _jetclass(label, args.mpi_jets, gen, {**gen["physics"], "mpi": mpi})
            key = "mpi_on" if mpi else "mpi_off"
            row[key] = {
                "jets_per_s_per_core": round(rate, 1),
                "median_sdmass": round(float(np.median(jet["jet_sdmass"])), 1),
                "mean_ungroomed_mass": round(float(_mass(jet).mean()), 1),
                "mean_multiplicity": round(float(jet["jet_nparticles"].mean()), 1),
            }
        study[label] = row
        off, on = row["mpi_off"], row["mpi_on"]
        print(
            f"MPI {label:<5} speed {off['jets_per_s_per_core']:.0f} -> "
            f"{on['jets_per_s_per_core']:.0f} jets/s; sd mass {off['median_sdmass']} -> "
            f"{on['median_sdmass']} GeV; mass {off['mean_ungroomed_mass']} -> "
            f"{on['mean_ungroomed_mass']} GeV; multiplicity {off['mean_multiplicity']} -> "
            f"{on['mean_multiplicity']}"
        )
    results["mpi_study"] = study
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


def _mass(jet: dict) -> np.ndarray:
    p2 = jet["jet_pt"] ** 2 * np.cosh(jet["jet_eta"]) ** 2
    return np.sqrt(np.maximum(jet["jet_energy"] ** 2 - p2, 0))


if __name__ == "__main__":
    main()
