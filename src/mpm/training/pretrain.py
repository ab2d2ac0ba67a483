"""Pre-training with Lightning: the MAE pass plus reconstruction tasks, AdamW with linear
warm-up and exponential decay, gradient clipping."""

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from mpm.errors import InputError
from mpm.models.bert import BertStyleModel
from mpm.models.encoder import FEATURE_SETS, JetEncoder, feature_index
from mpm.models.layers import LAYERS
from mpm.models.mae import MaskedAutoencoder
from mpm.models.masking import choose_dropped
from mpm.models.ssfm import SetToSetFlowMatching
from mpm.params import fraction, get, non_negative_int, one_of, positive_float, positive_int
from mpm.tasks.generative import ConditionalFlow, FlowMatching
from mpm.tasks.reconstruction import ParticleID, Regression, TokenClassification
from mpm.tokenizers.kmeans import KMeansTokenizer, load_centroids
from mpm.tokenizers.vqvae import VQVAETokenizer, load_vqvae
from mpm.training.schedule import PaperOptimizer

# Backbones of the paper: each pairs one continuous-feature task with the ID task. Token
# tasks need a fitted tokenizer (`tokenizer` path).
CONTINUOUS_TASKS = ("regression", "kmeans", "vqvae", "flow", "cfm")
TOKEN_TASKS = ("kmeans", "vqvae")
BACKBONES = (*CONTINUOUS_TASKS, "ssfm", "random")


def _tokenizer(backbone: str, path: str, n_features: int) -> nn.Module:
    tokenizer = (KMeansTokenizer(load_centroids(path)) if backbone == "kmeans"
                 else VQVAETokenizer(load_vqvae(path)))  # fmt: skip
    if tokenizer.n_features != n_features:
        raise InputError(f"{path}: tokenizer of {tokenizer.n_features} features, but "
                         f"'model.encoder.features' gives {n_features}")  # fmt: skip
    return tokenizer


def build_tasks(backbone: str, model_cfg: dict, cfg: dict, tokenizer: str | None) -> nn.ModuleDict:
    """The reconstruction tasks of a backbone (`pretrain` params group `cfg`): its continuous
    task on the features of `model.encoder.features`, and the ID task if `model.encoder.ids`."""
    if backbone not in CONTINUOUS_TASKS:
        raise ValueError(f"no pre-training task for backbone '{backbone}'")
    if (backbone in TOKEN_TASKS) != (tokenizer is not None):
        raise InputError(f"backbone '{backbone}': a tokenizer file is needed for, and only for, "
                         f"{', '.join(TOKEN_TASKS)}")  # fmt: skip
    dim = model_cfg["decoder"]["dim"]
    n_features = len(feature_index(model_cfg["encoder"]["features"]))
    tasks = {}
    if model_cfg["encoder"]["ids"]:
        id_cfg = cfg["id_task"]
        tasks["id"] = ParticleID(dim, id_cfg["weight"], id_cfg["label_smoothing"])
    if backbone == "regression":
        tasks["regression"] = Regression(dim, n_features)
    elif backbone in TOKEN_TASKS:
        tokens = _tokenizer(backbone, tokenizer, n_features)
        tasks[backbone] = TokenClassification(dim, tokens, tokens.n_tokens)
    elif backbone == "flow":
        flow = cfg["tasks"]["flow"]
        tasks["flow"] = ConditionalFlow(dim, n_features, flow["blocks"], flow["hidden"],
                                        flow["bins"])  # fmt: skip
    elif backbone == "cfm":
        cfm = cfg["tasks"]["cfm"]
        tasks["cfm"] = FlowMatching(dim, n_features, cfm["hidden"], steps=cfm["sample_steps"])
    return nn.ModuleDict(tasks)


VARIANTS = ("mae", "bert")


def build_model(model_cfg: dict, max_constituents: int) -> nn.Module:
    """The pre-training pass of `model.variant`: `mae` (MPMv2) or `bert` (MPMv1-style)."""
    encoder = JetEncoder(**model_cfg["encoder"])
    decoder = model_cfg["decoder"]
    if model_cfg["variant"] == "mae":
        return MaskedAutoencoder(
            encoder, decoder["dim"], decoder["depth"], decoder["heads"], max_constituents,
            layer=model_cfg["encoder"]["layer"], layer_scale_init=decoder["layer_scale_init"],
        )  # fmt: skip
    if model_cfg["variant"] == "bert":
        return BertStyleModel(encoder, decoder["dim"], max_constituents)
    raise InputError(f"params: 'model.variant' must be one of {VARIANTS}")


def build_ssfm(model_cfg: dict, cfg: dict) -> SetToSetFlowMatching:
    """The SSFM pass: the MPMv2 encoder and a decoder of the same width and depth."""
    decoder = model_cfg["decoder"]
    if model_cfg["encoder"]["registers"] < 1:
        raise InputError("params: the ssfm backbone needs 'model.encoder.registers' >= 1")
    return SetToSetFlowMatching(
        JetEncoder(**model_cfg["encoder"]), decoder["dim"], decoder["depth"], decoder["heads"],
        ids=model_cfg["encoder"]["ids"], sample_steps=cfg["tasks"]["ssfm"]["sample_steps"],
    )  # fmt: skip


class PretrainModule(PaperOptimizer, L.LightningModule):
    """One backbone's pre-training. MPMv2 backbones drop `mask_rate` of each jet; SSFM keeps a
    fraction of each jet drawn from U(kept_fraction_min, kept_fraction_max) in training (the
    paper's D_f = M/N; 0 makes the decoder a whole-jet generator) and drops `mask_rate` in
    validation, so its validation losses use the same masking as the others'."""

    def __init__(
        self,
        backbone: str,
        model_cfg: dict,
        pretrain_cfg: dict,
        mask_rate: float,
        max_constituents: int,
        tokenizer: str | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(logger=False)
        if backbone == "ssfm":
            self.model = build_ssfm(model_cfg, pretrain_cfg)
            self.tasks = nn.ModuleDict()
        else:
            self.model = build_model(model_cfg, max_constituents)
            self.tasks = build_tasks(backbone, model_cfg, pretrain_cfg, tokenizer)
        self.cfg = pretrain_cfg
        self.mask_rate = mask_rate

    @property
    def encoder(self) -> JetEncoder:
        return self.model.encoder

    def _ssfm_losses(self, batch: dict) -> dict[str, torch.Tensor]:
        mask = batch["mask"]
        if self.training:
            ssfm = self.cfg["tasks"]["ssfm"]
            low, high = ssfm["kept_fraction_min"], ssfm["kept_fraction_max"]
            kept = low + (high - low) * torch.rand(len(mask), device=mask.device)
            dropped = choose_dropped(mask, 1 - kept, min_kept=0)
        else:
            dropped = choose_dropped(mask, self.mask_rate)
        out = self.model(batch["csts"], batch["csts_id"], mask, dropped)
        losses = {"ssfm": out["ssfm"]}
        total = out["ssfm"]
        if "id_logits" in out:
            id_cfg = self.cfg["id_task"]
            losses["id"] = F.cross_entropy(out["id_logits"], out["ids"],
                                           label_smoothing=id_cfg["label_smoothing"])  # fmt: skip
            total = total + id_cfg["weight"] * losses["id"]
        losses["total"] = total
        return losses

    def _losses(self, batch: dict) -> dict[str, torch.Tensor]:
        if isinstance(self.model, SetToSetFlowMatching):
            return self._ssfm_losses(batch)
        dropped = choose_dropped(batch["mask"], self.mask_rate)
        decoded = self.model(batch["csts"], batch["csts_id"], batch["mask"], dropped)
        # what is reconstructed: the encoder's feature set
        targets = {**batch, "csts": batch["csts"][..., self.encoder.features]}
        losses = {name: task.loss(decoded, targets, dropped) for name, task in self.tasks.items()}
        losses["total"] = sum(self.tasks[name].weight * loss for name, loss in losses.items())
        return losses

    @torch.no_grad()
    def reconstruct(self, csts, ids, mask, dropped) -> torch.Tensor:
        """A sampled reconstruction [M, F] of the dropped constituents' features (the encoder's
        feature set, preprocessed), in the order of `csts[dropped]`: the continuous task's
        sample given each decoder output, or for SSFM the jointly generated set."""
        if isinstance(self.model, SetToSetFlowMatching):
            x, _, set_mask = self.model.sample(csts, ids, mask, dropped)
            return x[set_mask]
        decoded = self.model(csts, ids, mask, dropped)
        return self.tasks[self.hparams.backbone].sample(decoded)

    def training_step(self, batch, batch_idx):
        losses = self._losses(batch)
        size = len(batch["labels"])
        for name, loss in losses.items():
            self.log(f"train/{name}", loss, prog_bar=name == "total", batch_size=size)
        self.log("lr", self.lr_schedulers().get_last_lr()[0], batch_size=size)
        return losses["total"]

    def validation_step(self, batch, batch_idx):
        losses = self._losses(batch)
        for name, loss in losses.items():
            self.log(f"val/{name}", loss, prog_bar=name == "total", batch_size=len(batch["labels"]),
                     sync_dist=True)  # fmt: skip

    def configure_optimizers(self):
        params = [*self.model.parameters(), *self.tasks.parameters()]
        return self.paper_optimizer(params, self.cfg, self.cfg["weight_decay"])

def validate_params(params: dict) -> None:
    """One-line InputError for the first invalid setting of the params this module reads."""
    fraction(get(params, "mask_rate"), "mask_rate")
    one_of(get(params, "model.variant"), "model.variant", VARIANTS)
    for group in ("encoder", "decoder"):
        for key in ("dim", "depth", "heads"):
            positive_int(get(params, f"model.{group}.{key}"), f"model.{group}.{key}")
        positive_float(get(params, f"model.{group}.layer_scale_init"),
                       f"model.{group}.layer_scale_init")  # fmt: skip
        if get(params, f"model.{group}.dim") % get(params, f"model.{group}.heads"):
            raise InputError(f"params: 'model.{group}.dim' must be divisible by "
                             f"'model.{group}.heads'")  # fmt: skip
    non_negative_int(get(params, "model.encoder.registers"), "model.encoder.registers")
    one_of(get(params, "model.encoder.layer"), "model.encoder.layer", LAYERS)
    one_of(get(params, "model.encoder.features"), "model.encoder.features", FEATURE_SETS)
    one_of(get(params, "model.encoder.ids"), "model.encoder.ids", (True, False))
    one_of(get(params, "trainer.compile"), "trainer.compile", (True, False))
    one_of(get(params, "trainer.force_resume"), "trainer.force_resume", (True, False))
    for key in ("steps", "batch_size", "n_val_jets", "val_every_steps", "warmup_steps"):
        positive_int(get(params, f"pretrain.{key}"), f"pretrain.{key}")
    positive_int(get(params, "pretrain.n_train_jets"), "pretrain.n_train_jets", allow_none=True)
    for key in ("lr", "weight_decay", "half_life_steps", "grad_clip"):
        positive_float(get(params, f"pretrain.{key}"), f"pretrain.{key}")
    ssfm = "pretrain.tasks.ssfm"
    low = fraction(get(params, f"{ssfm}.kept_fraction_min"), f"{ssfm}.kept_fraction_min")
    high = fraction(get(params, f"{ssfm}.kept_fraction_max"), f"{ssfm}.kept_fraction_max", True)
    if low > high:
        raise InputError(f"params: '{ssfm}.kept_fraction_min' exceeds kept_fraction_max")
    positive_int(get(params, f"{ssfm}.sample_steps"), f"{ssfm}.sample_steps")
