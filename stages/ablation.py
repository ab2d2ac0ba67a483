"""DVC stage `ablation`: pre-train one run of the Table 1 ablation or the Fig. 5 sweeps and
probe its frozen backbone.

The run is Table 1 row --row (1-6; `mpm.ablation.TABLE1_ROWS`) on top of the profile, with
the shorter schedule of params `ablation.pretrain`, and optionally a swept --decoder-depth or
--mask-rate (Fig. 5). Its backbone then gets a class-attention head trained on JetClass with
the backbone frozen (`mpm.ablation.probe`: `finetune.head`, `finetune.recipe`,
`ablation.probe`). A k-means run takes --tokenizer, or --kinematic-tokenizer for the rows
that see only the kinematic features (1-2). --results receives
run.json (the run's settings), pretrain.json, the training curves (curves/metrics.csv) and the
probe run (probe/), all at once when both steps succeeded; --checkpoints lets a killed
pre-training resume.

--curve (the decoder curve): the row's regression backbone on the profile's own schedule to
`ablation.curve.steps`, its encoder saved every `ablation.curve.probe_every` steps (in
--checkpoints/snapshots) and each snapshot probed: --results gets probe-step<N>/ and
curve.json (steps and accuracies) instead of probe/.
"""

import argparse
import json
from pathlib import Path

from mpm.ablation import (
    CURVE_BACKBONE,
    FINAL_ROW,
    TABLE1_BACKBONES,
    curve_params,
    probe,
    run_params,
    validate_curve_params,
    validate_probe_params,
)
from mpm.atomic import atomic_dir
from mpm.cli import run_stage
from mpm.errors import InputError
from mpm.params import fraction, get, one_of, positive_int
from mpm.training.fit import is_rank_zero
from mpm.training.pretrain import validate_params as validate_pretrain
from mpm.training.run import EncoderSnapshots, pretrain


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backbone", required=True, help=f"one of {', '.join(TABLE1_BACKBONES)}")
    parser.add_argument("--row", required=True, type=int, help=f"Table 1 row, 1-{FINAL_ROW - 1}")
    parser.add_argument("--decoder-depth", type=int, help="Fig. 5: decoder depth of the run")
    parser.add_argument("--mask-rate", type=float, help="Fig. 5: mask rate of the run")
    parser.add_argument("--curve", action="store_true",
                        help=f"the decoder curve: the row ({CURVE_BACKBONE}) on the profile's "
                        "schedule to ablation.curve.steps, probed every probe_every")
    parser.add_argument("--data", default="data/processed/jetclass", help="converted JetClass")
    parser.add_argument("--preprocessor", default="data/preprocessor/quantile.joblib")
    parser.add_argument("--tokenizer", help="k-means tokenizer file (kmeans backbone)")
    parser.add_argument("--kinematic-tokenizer", help="k-means tokenizer for rows 1-2 (kinematics)")
    parser.add_argument("--out", required=True, help="backbone artifact (.pt)")
    parser.add_argument("--checkpoints", required=True, help="checkpoint folder (resumable)")
    parser.add_argument("--results", required=True, help="run folder: metrics, curves, probe")


def body(params: dict, args: argparse.Namespace) -> None:
    backbone = one_of(args.backbone, "--backbone", TABLE1_BACKBONES)
    one_of(args.row, "--row", range(1, FINAL_ROW))
    if args.decoder_depth is not None:
        positive_int(args.decoder_depth, "--decoder-depth")
    if args.mask_rate is not None:
        fraction(args.mask_rate, "--mask-rate")
    for key in ("steps", "warmup_steps", "val_every_steps"):
        positive_int(get(params, f"ablation.pretrain.{key}"), f"ablation.pretrain.{key}")
    if args.curve:
        validate_curve_params(params)
        if backbone != CURVE_BACKBONE or args.decoder_depth or args.mask_rate:
            raise InputError(f"--curve runs the {CURVE_BACKBONE} backbone of a Table 1 row only")
        params = curve_params(params, args.row)
    else:
        params = run_params(params, args.row, args.decoder_depth, args.mask_rate)
    validate_pretrain(params)
    validate_probe_params(params)
    data, preprocessor = Path(args.data), Path(args.preprocessor)
    run = {"backbone": backbone, "row": args.row, "steps": get(params, "pretrain.steps"),
           "decoder_depth": get(params, "model.decoder.depth"), "mask_rate": params["mask_rate"]}
    kinematic_row = get(params, "model.encoder.features") == "kinematic"  # the row's settings
    tokenizer = args.tokenizer
    if args.kinematic_tokenizer is not None and kinematic_row:
        tokenizer = args.kinematic_tokenizer
    tokenizer = None if tokenizer is None else Path(tokenizer)

    snapshots = Path(args.checkpoints) / "snapshots"
    every = get(params, "pretrain.val_every_steps")
    callbacks = (EncoderSnapshots(snapshots, every, params["model"]["encoder"], backbone),)

    def pretrain_into(results: Path) -> None:
        # the probe is the metric here: the pre-training linear-probe health check is skipped
        pretrain(backbone, params, data, preprocessor, Path(args.out), Path(args.checkpoints),
                 results / "curves", results / "pretrain.json", tokenizer, linear_probe=False,
                 callbacks=callbacks if args.curve else ())  # fmt: skip

    if not is_rank_zero():  # DDP: the other ranks only take part in the pre-training
        pretrain_into(Path(args.results))
        return
    with atomic_dir(args.results) as results:
        (results / "run.json").write_text(json.dumps(run, indent=2) + "\n")
        pretrain_into(results)
        if not args.curve:
            probe(Path(args.out), params, data, preprocessor, results / "probe")
            return
        steps = range(every, get(params, "pretrain.steps") + 1, every)
        accuracy = [probe(snapshots / f"step{s}.pt", params, data, preprocessor,
                          results / f"probe-step{s}")["accuracy"] for s in steps]  # fmt: skip
        (results / "curve.json").write_text(json.dumps(
            {**run, "probe_steps": list(steps), "accuracy": accuracy}, indent=2) + "\n")


if __name__ == "__main__":
    run_stage("ablation", __doc__.splitlines()[0].split(": ", 1)[1], body, add_arguments)
