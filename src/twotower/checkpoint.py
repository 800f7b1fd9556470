"""Checkpoints: one ``torch.save``'d dict of plain values and tensors that rebuilds a model alone.

The dict holds the model config, the train config, the fitted feature space (vocabularies and scalers),
the layer sizes and the weights, so ``load_checkpoint`` needs nothing but the file, and the file loads
with ``torch.load(weights_only=True)`` (no pickled code).

The training state (``train_state.pt`` beside ``model.pt``, written by ``twotower.train`` after every
epoch) is a second such file: whatever the loop needs to continue exactly where it stopped, including the
states of every random generator (``rng_state`` / ``set_rng_state``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from twotower.config import ModelConfig, TrainConfig
from twotower.io import write_atomic
from twotower.model.feature_space import FeatureSpace
from twotower.model.two_tower import TwoTower

CHECKPOINT_FORMAT = "twotower-checkpoint/1"
TRAIN_STATE_FORMAT = "twotower-train-state/1"


@dataclass
class ModelBundle:
    """A trained model with everything needed to encode raw rows for it."""

    model: TwoTower
    features: FeatureSpace
    model_config: ModelConfig
    train_config: TrainConfig | None = None
    meta: dict = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return next(iter(self.model.state_dict().values())).device


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; anything else as torch names it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def save_checkpoint(path: Path, bundle: ModelBundle) -> None:
    """One dict of plain values and CPU tensors (loads with ``weights_only=True``), written atomically."""
    cpu: dict[int, torch.Tensor] = {}  # the towers share the content table: keep one CPU copy
    state = {}
    for key, value in bundle.model.state_dict().items():
        ptr = value.data_ptr()
        if ptr not in cpu:
            cpu[ptr] = value.detach().cpu()
        state[key] = cpu[ptr]
    payload = {
        "format": CHECKPOINT_FORMAT,
        "model_config": bundle.model_config.model_dump(mode="json"),
        "train_config": bundle.train_config.model_dump(mode="json") if bundle.train_config else None,
        "features": bundle.features.state_dict(),
        "dims": bundle.features.dims(),
        "state_dict": state,
        "meta": bundle.meta,
    }
    write_atomic(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> ModelBundle:
    """Rebuild model and feature space from a checkpoint file alone; the model is in eval mode."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a {CHECKPOINT_FORMAT} file")
    cfg = ModelConfig.model_validate(ckpt["model_config"])
    model = TwoTower(cfg, ckpt["dims"])
    model.load_state_dict(ckpt["state_dict"])
    train_cfg = TrainConfig.model_validate(ckpt["train_config"]) if ckpt["train_config"] else None
    features = FeatureSpace.from_state_dict(ckpt["features"], cfg)
    return ModelBundle(
        model.to(resolve_device(str(device))).eval(), features, cfg, train_cfg, ckpt.get("meta", {})
    )


def rng_state() -> dict:
    """The states of Python's, NumPy's and torch's global generators (CUDA too when present), as plain values
    and tensors (``weights_only`` loadable)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.as_tensor(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what ``rng_state`` returned."""
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_train_state(path: Path, state: dict) -> None:
    """Write a training state dict (plain values and CPU tensors) atomically."""
    write_atomic(path, lambda tmp: torch.save({"format": TRAIN_STATE_FORMAT, **state}, tmp))


def load_train_state(path: Path) -> dict | None:
    """The training state at ``path``, or None when there is none."""
    if not Path(path).exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") != TRAIN_STATE_FORMAT:
        raise ValueError(f"{path} is not a {TRAIN_STATE_FORMAT} file; delete it to train from the start")
    return state
