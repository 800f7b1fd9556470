"""The held-out day's played-rows metric (objective ``bce``) scored a row group at a time.

``selection.PlayedHoldout`` encodes the whole held-out day once and keeps it; streamed training keeps only
what the metric needs: each row's user id, label, weight and logit (20 bytes a row). Every epoch the day's
row groups are read, encoded with their history snapshots and scored in turn, then the metric is the one
``PlayedHoldout`` computes ("auc": mean per-user AUC; "bce": weighted BCE).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from twotower.evaluate.metrics import mean_user_auc
from twotower.inference import predict
from twotower.model.feature_space import FeatureSpace
from twotower.model.objectives import weighted_bce
from twotower.model.two_tower import TwoTower
from twotower.stream.batches import training_columns
from twotower.stream.files import ExampleFiles, ExampleIndex


class StreamedPlayedHoldout:
    """``PlayedHoldout`` of the rows on ``day`` (days since 1970-01-01), read from ``files`` per row group."""

    def __init__(
        self, name: str, files: ExampleFiles, index: ExampleIndex, day: int, features: FeatureSpace,
        users: pd.DataFrame | None,
    ):  # fmt: skip
        self.name, self.files, self.day, self.features, self.users = name, files, day, features, users
        self.groups = np.flatnonzero(index.counts([day]).sum(axis=1) > 0)
        self.columns = training_columns(features)

    def __call__(self, model: TwoTower, batch_size: int, device: torch.device) -> float:
        users, labels, weights, logits = [], [], [], []
        for g in self.groups:
            frame = self.files.read(int(g), self.columns, [self.day])
            data = self.features.transform(frame, self.files.history_for(frame), self.users)
            logits.append(predict(model, data, batch_size, device))
            users.append(frame["user_id"].to_numpy(np.int64))
            labels.append(data.columns["label"].numpy())
            weights.append(data.columns["weight"].numpy())
        label, logit = np.concatenate(labels), np.concatenate(logits)
        if self.name == "auc":
            return mean_user_auc(np.concatenate(users), label, logit)[0]
        weight = torch.as_tensor(np.concatenate(weights))
        return float(weighted_bce(torch.as_tensor(logit), torch.as_tensor(label), weight))
