"""Bad input to the stages: one line, non-zero, nothing left (the params of every stage;
the catalogue of kinds of bad input is test_bad_input_catalogue.py)."""

import subprocess
import sys

import pytest

from conftest import REPO, run_stage


def _assert_one_line_error(proc, stage: str) -> str:
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {stage}: "), proc.stderr
    return errors[0]


@pytest.mark.parametrize(
    "content, message",
    [(None, "train.h5: file not found"), (b"\x89HDF\r\n garbage", "not a readable HDF5 file")],
)
def test_fit_preprocessor_bad_input_file(tmp_path, params, content, message):
    train, out = tmp_path / "train.h5", tmp_path / "pre.joblib"
    if content is not None:
        train.write_bytes(content)
    proc = run_stage("fit_preprocessor.py", params, tmp_path, "--train", str(train), "--out",
                     str(out))  # fmt: skip
    assert message in _assert_one_line_error(proc, "fit_preprocessor")
    assert not out.exists()


@pytest.mark.parametrize("value", [0, -3, "many", None])
def test_fit_preprocessor_invalid_n_jets(tmp_path, params, value):
    params["preprocess"]["n_jets"] = value
    proc = run_stage(
        "fit_preprocessor.py",
        params,
        tmp_path,
        "--train",
        "x.h5",
        "--out",
        str(tmp_path / "pre.joblib"),
    )
    assert "preprocess.n_jets" in _assert_one_line_error(proc, "fit_preprocessor")


def test_unreadable_params_file(tmp_path):
    (tmp_path / "params.yaml").write_text("seed: [1,\n")
    proc = subprocess.run(
        [sys.executable, "stages/generate.py", "--params", str(tmp_path / "params.yaml")],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert "params.yaml: not valid YAML" in _assert_one_line_error(proc, "generate")


def _pretrain(params, tmp_path, *args):
    names = {"out": "b.pt", "checkpoints": "ckpt", "log-dir": "log", "metrics": "m.json"}
    paths = [f"--{k}={tmp_path / v}" for k, v in names.items()]
    return run_stage("pretrain.py", params, tmp_path, "--data", str(tmp_path / "missing"), *paths,
                     *args)  # fmt: skip


@pytest.mark.parametrize(
    "edit, args, message",
    [
        (("model", {"variant": "gpt"}), ("--backbone", "regression"), "model.variant"),
        (
            (
                "model",
                {
                    "encoder": {
                        "dim": 30,
                        "depth": 1,
                        "heads": 4,
                        "registers": 0,
                        "layer": "prenorm",
                        "features": "all",
                        "ids": True,
                        "layer_scale_init": 0.1,
                    }
                },
            ),
            ("--backbone", "regression"),
            "'model.encoder.dim' must be divisible",
        ),
        (
            (
                "model",
                {
                    "encoder": {
                        "dim": 32,
                        "depth": 1,
                        "heads": 4,
                        "registers": 0,
                        "layer": "post",
                        "features": "all",
                        "ids": True,
                        "layer_scale_init": 0.1,
                    }
                },
            ),
            ("--backbone", "regression"),
            "'model.encoder.layer' must be one of",
        ),
        (
            ("model", {"decoder": {"dim": 16, "depth": 1, "heads": 2, "layer_scale_init": 0}}),
            ("--backbone", "regression"),
            "'model.decoder.layer_scale_init' must be",
        ),
        (None, ("--backbone", "vqvae", "--tokenizer", "/nonexistent/v.pt"), "v.pt: VQ-VAE"),
        (None, ("--backbone", "kmeans"), "a tokenizer file is needed"),
        (None, ("--backbone", "kmeans", "--tokenizer", "/nonexistent/k.pt"), "k.pt: k-means"),
        (None, ("--backbone", "regression"), "missing/train.h5: file not found"),
    ],
)
def test_pretrain_bad_input_leaves_nothing(tmp_path, params, edit, args, message):
    if edit:
        key, value = edit
        params[key] = {**params[key], **value} if isinstance(value, dict) else value
    proc = _pretrain(params, tmp_path, *args)
    assert message in _assert_one_line_error(proc, "pretrain")
    assert not (tmp_path / "b.pt").exists() and not (tmp_path / "m.json").exists()


def test_fit_kmeans_missing_data_is_named(tmp_path, params):
    import numpy as np
    from sklearn.preprocessing import QuantileTransformer

    from mpm.data.preprocess import save_preprocessor

    pre = tmp_path / "pre.joblib"
    save_preprocessor(QuantileTransformer(n_quantiles=10).fit(np.random.rand(50, 7)), pre)
    out, metrics = tmp_path / "kmeans.pt", tmp_path / "kmeans.json"
    proc = run_stage("fit_kmeans.py", params, tmp_path, "--data", str(tmp_path / "none"),
                     "--preprocessor", str(pre), "--out", str(out),
                     "--metrics", str(metrics))  # fmt: skip
    assert "none/train.h5: file not found" in _assert_one_line_error(proc, "fit_kmeans")
    assert not out.exists() and not metrics.exists()


@pytest.mark.parametrize(
    "edit, data, message",
    [
        ({"codebook_size": 0}, "missing", "'tokenizers.vqvae.codebook_size' must be a positive"),
        ({"ema_decay": 1.5}, "missing", "'tokenizers.vqvae.ema_decay' must be a number"),
        ({}, "missing", "missing/train.h5: file not found"),
    ],
)
def test_train_vqvae_bad_input_leaves_nothing(tmp_path, params, edit, data, message):
    params["tokenizers"]["vqvae"].update(edit)
    out, metrics = tmp_path / "vqvae.pt", tmp_path / "vqvae.json"
    proc = run_stage("train_vqvae.py", params, tmp_path, "--data", str(tmp_path / data),
                     "--out", str(out), "--metrics", str(metrics),
                     "--checkpoints", str(tmp_path / "ckpt"),
                     "--log-dir", str(tmp_path / "log"))  # fmt: skip
    assert message in _assert_one_line_error(proc, "train_vqvae")
    assert not out.exists() and not metrics.exists()


def test_plot_training_unreadable_curve_is_named(tmp_path, params):
    (tmp_path / "bad.csv").write_text("loss\n1.0\n")
    figure = tmp_path / "curves"
    proc = run_stage("plot_training.py", params, tmp_path, "--figure", str(figure),
                     "--curve", f"a={tmp_path / 'bad.csv'}")  # fmt: skip
    assert "bad.csv: not a training curve" in _assert_one_line_error(proc, "plot_training")
    assert not list(tmp_path.glob("curves*"))


@pytest.mark.parametrize(
    "edit, model, message",
    [
        ({}, "ssfm={missing}", "missing.pt: pre-trained model file not found"),
        ({}, "ssfm", "--model 'ssfm': expected NAME=PT"),
        ({"figure_jets": 5, "n_jets": 4}, "ssfm={missing}", "'reconstruction.figure_jets' exceeds"),
        ({"mask_rate": 1.5}, "ssfm={missing}", "'reconstruction.mask_rate' must be"),
    ],
)
def test_reconstruct_bad_input_leaves_nothing(tmp_path, params, edit, model, message):
    params["reconstruction"].update(edit)
    samples, metrics = tmp_path / "samples.npz", tmp_path / "rec.json"
    proc = run_stage("reconstruct.py", params, tmp_path,
                     "--model", model.format(missing=tmp_path / "missing.pt"),
                     "--samples", str(samples), "--metrics", str(metrics))  # fmt: skip
    assert message in _assert_one_line_error(proc, "reconstruct")
    assert not list(tmp_path.glob("*samples*")) and not metrics.exists()


@pytest.mark.parametrize(
    "edit, grid, message",
    [
        ({}, {"modes": ["thawed"]}, "'finetune.grid.modes' must list modes of finetuned, frozen"),
        ({}, {"sizes": {"btag": "many"}}, "'finetune.grid.sizes.btag' must be a list"),
        ({}, {"seeds": [-1]}, "'finetune.grid.seeds' must be a non-negative integer"),
        ({}, {"finetuned_sizes": {"vertex": [7]}}, "'finetune.grid.finetuned_sizes.vertex' must "
                                                   "be null or a list of the task's sizes"),
        ({"patience": 0}, {}, "'finetune.recipe.patience' must be a positive integer"),
        ({"max_steps": 5, "val_every_steps": 10}, {}, "'finetune.recipe.max_steps' is below"),
    ],
)
def test_finetune_bad_input_leaves_nothing(tmp_path, params, edit, grid, message):
    params["finetune"]["recipe"].update(edit)
    for key, value in grid.items():
        if isinstance(value, dict):
            params["finetune"]["grid"][key].update(value)
        else:
            params["finetune"]["grid"][key] = value
    argv = {
        "--task": "btag",
        "--backbone": str(tmp_path / "missing.pt"),
        "--data": str(tmp_path),
        "--out": str(tmp_path / "run"),
    }
    proc = run_stage("finetune.py", params, tmp_path, *[x for kv in argv.items() for x in kv])
    assert message in _assert_one_line_error(proc, "finetune")
    assert not (tmp_path / "run").exists()
