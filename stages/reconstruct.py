"""DVC stage `reconstruct`: masked-jet reconstructions of every pre-trained model (Fig. 8) and
SSFM whole-jet generation.

The same seeded test jets, with `reconstruction.mask_rate` of each dropped, go to every model
(`--model name=path`, repeatable); each samples the dropped constituents. Writes the
1-Wasserstein distance of each model's reconstructions to the truth and, for an SSFM model,
of whole jets generated from nothing (D_f = 0) to real jets (jet mass, constituent pT), and
the samples that notebooks/reconstruction.ipynb draws (Fig. 8: the first
`reconstruction.figure_jets` jets; the SSFM generation).
"""

import argparse
import json
import logging
from pathlib import Path

from mpm.atomic import atomic_file
from mpm.cli import run_stage
from mpm.data.preprocess import load_preprocessor
from mpm.errors import InputError
from mpm.evaluation.reconstruction import (
    evaluate_generation,
    evaluate_reconstruction,
    load_masked_jets,
)
from mpm.evaluation.samples import save_samples
from mpm.params import fraction, get, positive_int
from mpm.training.pretrained import load_pretrained

log = logging.getLogger("reconstruct")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", action="append", required=True, metavar="NAME=PT",
                        help="a pre-trained model's name and file (repeatable)")  # fmt: skip
    parser.add_argument("--data", default="data/processed/jetclass/test.h5", help="test jets")
    parser.add_argument("--preprocessor", default="data/preprocessor/quantile.joblib")
    parser.add_argument("--samples", default="results/reconstruction/samples.npz",
                        help="the figure jets' reconstructions and the SSFM generation (.npz)")
    parser.add_argument("--generation", action="store_true",
                        help="also generate whole jets with the (one) SSFM model")  # fmt: skip
    parser.add_argument("--metrics", default="results/reconstruction.json")


def _models(specs: list[str]) -> dict:
    models = {}
    for spec in specs:
        name, _, path = spec.partition("=")
        if not path:
            raise InputError(f"--model '{spec}': expected NAME=PT")
        models[name] = load_pretrained(path)[0]
    return models


def body(params: dict, args: argparse.Namespace) -> None:
    seed = get(params, "seed")
    n_jets = positive_int(get(params, "reconstruction.n_jets"), "reconstruction.n_jets")
    mask_rate = fraction(get(params, "reconstruction.mask_rate"), "reconstruction.mask_rate")
    figure_jets = positive_int(get(params, "reconstruction.figure_jets"),
                               "reconstruction.figure_jets")  # fmt: skip
    if figure_jets > n_jets:
        raise InputError("params: 'reconstruction.figure_jets' exceeds 'reconstruction.n_jets'")
    models = _models(args.model)
    ssfm = [name for name, m in models.items() if m.hparams.backbone == "ssfm"]
    if args.generation and len(ssfm) != 1:
        raise InputError("--generation needs exactly one SSFM model among --model")
    preprocessor = load_preprocessor(args.preprocessor)
    jets = load_masked_jets(Path(args.data), Path(args.preprocessor), n_jets, mask_rate, seed)
    log.info("%d jets, %d of %d constituents masked", n_jets, int(jets.dropped.sum()),
             int(jets.mask.sum()))  # fmt: skip
    reconstructions, summary = {}, {"n_jets": n_jets, "mask_rate": mask_rate, "w1": {}}
    for name, module in models.items():
        reconstructions[name] = evaluate_reconstruction(module, jets, preprocessor, seed)
        summary["w1"][name] = {k: round(v, 4) for k, v in reconstructions[name].w1.items()}
        log.info("%s: W1 to the truth (normalised pT, d_eta, d_phi) %s", name,
                 summary["w1"][name])  # fmt: skip
    generation = None
    if args.generation:
        generation = evaluate_generation(models[ssfm[0]], jets, preprocessor, seed)
        summary["ssfm_generation"] = generation["metrics"]
        log.info("SSFM, D_f = 0: %s", generation["metrics"])
    save_samples(Path(args.samples), jets, reconstructions, figure_jets, generation)
    with atomic_file(args.metrics) as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    log.info("wrote %s and %s", args.samples, args.metrics)


if __name__ == "__main__":
    run_stage("reconstruct", __doc__.splitlines()[0].split(": ", 1)[1], body, add_arguments)
