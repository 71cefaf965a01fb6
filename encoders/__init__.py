"""The torch encoders that embed user states, and how they are trained and stored.

- ``models``: the networks (state autoencoder, item-pool encoder, sequence encoder, recurrent encoder)
- ``artifact``: the versioned artifact file (weights + the feature layout they expect)
- ``serving``: :class:`Encoder`, the preloaded model the pipeline calls on micro-batches
- ``train`` / ``train_items``: training from a recorded log
"""

from __future__ import annotations

from state.lazy import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "StateAutoencoder": "encoders.models",
    "ItemPoolEncoder": "encoders.models",
    "SequenceEncoder": "encoders.models",
    "RecurrentEncoder": "encoders.models",
    "build_model": "encoders.models",
    "EncoderArtifact": "encoders.artifact",
    "ArtifactError": "encoders.artifact",
    "save_artifact": "encoders.artifact",
    "load_artifact": "encoders.artifact",
    "Encoder": "encoders.serving",
    "load_encoder": "encoders.serving",
    "TrainConfig": "encoders.train",
    "DEFAULT_KIND": "encoders.train",
    "train_encoder": "encoders.train",
})
