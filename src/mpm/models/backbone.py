"""The backbone artifact: a pre-trained (or randomly initialised) encoder saved with its
configuration, so every downstream stage rebuilds it from the file alone."""

from pathlib import Path

import torch

from mpm.atomic import atomic_file
from mpm.errors import InputError
from mpm.models.encoder import JetEncoder

FORMAT = "mpm-backbone/1"


def save_backbone(encoder: JetEncoder, config: dict, info: dict, path: Path) -> None:
    """`config`: JetEncoder keyword arguments; `info`: provenance (task, steps, ...)."""
    state = {k: v.detach().cpu() for k, v in encoder.state_dict().items()}
    with atomic_file(path) as tmp:
        torch.save({"format": FORMAT, "config": config, "info": info, "state_dict": state}, tmp)


def load_backbone(path: str | Path) -> tuple[JetEncoder, dict]:
    """The encoder stored at `path` and its provenance; one-line errors for bad files."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: backbone file not found")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        raise InputError(f"{path}: not a readable backbone file") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise InputError(f"{path}: not a backbone file of format {FORMAT}")
    encoder = JetEncoder(**blob["config"])
    encoder.load_state_dict(blob["state_dict"])
    return encoder, blob["info"]
