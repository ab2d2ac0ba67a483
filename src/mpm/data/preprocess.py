"""The quantile-to-normal transform of the 7 continuous features.

Fitted once on JetClass training jets (the pre-training data) and applied to every dataset by
the loader, so a backbone always sees inputs on the scale it was trained on. Neutral particles
have no impact parameters: they are left out of the fit (NaN) and replaced by N(0, 1) noise at
load time, so that a constant zero does not pile up in one quantile.
"""

import logging
from pathlib import Path

import joblib
import numpy as np
import sklearn
from sklearn.preprocessing import QuantileTransformer

from mpm.atomic import atomic_file
from mpm.data import schema
from mpm.data.h5io import open_jets
from mpm.errors import InputError

log = logging.getLogger(__name__)

IP = list(schema.IMPACT_PARAMETER_FEATURES)


def _is_neutral(ids: np.ndarray) -> np.ndarray:
    return np.isin(ids, schema.NEUTRAL_IDS)


def fit_preprocessor(
    train_h5: Path, n_jets: int, n_quantiles: int, subsample: int, seed: int
) -> QuantileTransformer:
    """Fit on the constituents of the first `n_jets` jets (the file is already shuffled)."""
    with open_jets(train_h5) as file:
        n_jets = min(n_jets, file[schema.H5_LABELS].shape[0])
        mask = file[schema.H5_MASK][:n_jets]
        csts = file[schema.H5_CONSTITUENTS][:n_jets][mask].astype(np.float64)
        ids = file[schema.H5_IDS][:n_jets][mask]
    if len(csts) == 0:
        raise InputError(f"{train_h5}: no constituents to fit the preprocessor on")
    csts[np.ix_(_is_neutral(ids), IP)] = np.nan
    log.info("fitting the quantile transform on %d constituents of %d jets", len(csts), n_jets)
    transformer = QuantileTransformer(
        n_quantiles=min(n_quantiles, len(csts)),
        output_distribution="normal",
        subsample=subsample,
        random_state=seed,
    )
    return transformer.fit(csts)


def save_preprocessor(transformer: QuantileTransformer, path: Path) -> None:
    with atomic_file(path) as tmp:
        joblib.dump({"transformer": transformer, "sklearn": sklearn.__version__}, tmp)


def load_preprocessor(path: str | Path) -> "Preprocessor":
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: preprocessor file not found (run the fit_preprocessor stage)")
    try:
        payload = joblib.load(path)
        transformer = payload["transformer"]
    except Exception:
        raise InputError(f"{path}: not a preprocessor saved by fit_preprocessor") from None
    return Preprocessor(transformer)


class Preprocessor:
    """Applies the fitted transform to padded arrays and fills neutral impact parameters."""

    def __init__(self, transformer: QuantileTransformer):
        self.transformer = transformer

    def __call__(
        self, csts: np.ndarray, ids: np.ndarray, mask: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """[..., P, 7] raw features -> transformed float32, zeros at padded positions."""
        flat = csts[mask].astype(np.float64)
        neutral = _is_neutral(ids[mask])
        flat[np.ix_(neutral, IP)] = np.nan
        flat = self.transformer.transform(flat)
        flat[np.ix_(neutral, IP)] = rng.standard_normal((int(neutral.sum()), len(IP)))
        out = np.zeros(csts.shape, np.float32)
        out[mask] = flat
        return out

    def inverse(self, features: np.ndarray) -> np.ndarray:
        """Transformed [n, 7] features back to physical units (neutral IPs are meaningless)."""
        return self.transformer.inverse_transform(features.astype(np.float64)).astype(np.float32)
