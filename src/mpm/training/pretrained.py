"""The pre-trained model artifact: the whole pre-training model (encoder, decoder and task
heads) with its configuration, for what needs more than the backbone, such as reconstructing
masked jets (paper appendix E) or generating jets with SSFM."""

from pathlib import Path

import torch

from mpm.atomic import atomic_file
from mpm.errors import InputError
from mpm.training.pretrain import PretrainModule

FORMAT = "mpm-pretrain/1"


def save_pretrained(module: PretrainModule, info: dict, path: Path) -> None:
    """`info`: provenance (steps, ...). A token backbone's tokenizer is saved in the state;
    its file is still read to rebuild the model."""
    state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    blob = {"format": FORMAT, "hparams": dict(module.hparams), "info": info, "state_dict": state}
    with atomic_file(path) as tmp:
        torch.save(blob, tmp)


def load_pretrained(path: str | Path) -> tuple[PretrainModule, dict]:
    """The model stored at `path` (eval mode, CPU) and its provenance; one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: pre-trained model file not found")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        raise InputError(f"{path}: not a readable pre-trained model file") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise InputError(f"{path}: not a pre-trained model file of format {FORMAT}")
    module = PretrainModule(**blob["hparams"])
    module.load_state_dict(blob["state_dict"])
    return module.eval(), blob["info"]
