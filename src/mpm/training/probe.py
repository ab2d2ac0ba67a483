"""A cheap health signal for backbones: a linear probe of pooled encoder outputs."""

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mpm.data.loader import JetDataset, make_loader
from mpm.models.encoder import JetEncoder


@torch.no_grad()
def pooled_features(encoder: JetEncoder, dataset: JetDataset) -> tuple[np.ndarray, np.ndarray]:
    """Per jet: mean of the constituent outputs and mean of the register outputs (if the encoder
    has registers), concatenated; and the labels."""
    encoder.eval()
    features, labels = [], []
    for batch in make_loader(dataset, 0):
        out, mask = encoder(batch["csts"], batch["csts_id"], batch["mask"])
        r = encoder.n_registers
        csts_mask = mask[:, r:, None].float()
        mean = (out[:, r:] * csts_mask).sum(1) / csts_mask.sum(1).clamp(min=1)
        pooled = [mean, out[:, :r].mean(1)] if r else [mean]
        features.append(torch.cat(pooled, dim=1).numpy())
        labels.append(batch["labels"].numpy())
    return np.concatenate(features), np.concatenate(labels)


def linear_probe_accuracy(encoder: JetEncoder, train: JetDataset, test: JetDataset) -> float:
    """Accuracy on `test` of a logistic regression fitted on `train`'s pooled features."""
    x_train, y_train = pooled_features(encoder, train)
    x_test, y_test = pooled_features(encoder, test)
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    probe.fit(x_train, y_train)
    return float((probe.predict(x_test) == y_test).mean())
