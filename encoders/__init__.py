"""The torch encoders that embed user states, and how they are trained and stored.

- ``models``: the networks (state autoencoder, item-pool encoder)
- ``artifact``: the versioned artifact file (weights + the feature layout they expect)
- ``serving``: :class:`Encoder`, the preloaded model the pipeline calls on micro-batches
- ``train`` / ``train_items``: training from a recorded log
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "StateAutoencoder": "encoders.models",
    "ItemPoolEncoder": "encoders.models",
    "build_model": "encoders.models",
    "EncoderArtifact": "encoders.artifact",
    "ArtifactError": "encoders.artifact",
    "save_artifact": "encoders.artifact",
    "load_artifact": "encoders.artifact",
    "Encoder": "encoders.serving",
    "load_encoder": "encoders.serving",
    "TrainConfig": "encoders.train",
    "train_encoder": "encoders.train",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    # Lazy, so that importing one module of the package does not import all of them.
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
