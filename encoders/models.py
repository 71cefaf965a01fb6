"""Torch encoder modules: every kind maps a user's features to an embedding.

All kinds share one call signature, ``module(dense, item_tokens, item_weights)``,
so serving and training never special-case a kind. Register new kinds in
:data:`ENCODER_KINDS`.

    >>> import torch
    >>> from state.features import FeatureSpec
    >>> spec = FeatureSpec()
    >>> m = build_model("state-ae", spec, {"dim": 8, "hidden": 32})
    >>> dense = torch.rand(3, spec.feature_width)
    >>> items = torch.full((3, spec.item_history), -1, dtype=torch.int32)
    >>> m(dense, items, torch.zeros(3, spec.item_history)).shape
    torch.Size([3, 8])
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from state.features import FeatureSpec

__all__ = ["StateAutoencoder", "ENCODER_KINDS", "build_model"]


class StateAutoencoder(nn.Module):
    """MLP autoencoder over the normalised state vector (action mix, categories, recency/frequency/value).

    The embedding is the bottleneck; the decoder exists only for training.
    Inputs are standardised with the training set's mean and spread, stored
    as buffers so the artifact carries them.
    """

    kind = "state-ae"

    def __init__(self, spec: FeatureSpec, dim: int = 16, hidden: int = 64) -> None:
        super().__init__()
        width = spec.feature_width
        self.register_buffer("mean", torch.zeros(width))
        self.register_buffer("scale", torch.ones(width))
        self.encoder = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, dim))
        self.decoder = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, width))

    def standardise(self, dense: torch.Tensor) -> torch.Tensor:
        return (dense - self.mean) / self.scale

    def forward(self, dense: torch.Tensor, item_tokens: torch.Tensor, item_weights: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.standardise(dense))

    def reconstruction_loss(self, dense: torch.Tensor) -> torch.Tensor:
        x = self.standardise(dense)
        return nn.functional.mse_loss(self.decoder(self.encoder(x)), x)


ENCODER_KINDS: dict[str, type[nn.Module]] = {
    StateAutoencoder.kind: StateAutoencoder,
}


def build_model(kind: str, spec: FeatureSpec, config: dict[str, Any]) -> nn.Module:
    try:
        cls = ENCODER_KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown encoder kind {kind!r}; known: {', '.join(sorted(ENCODER_KINDS))}") from None
    return cls(spec, **config)
