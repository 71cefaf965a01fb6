"""Serving: a preloaded encoder applied to micro-batches of user features.

Inference runs under ``torch.inference_mode`` in chunks of at most
``max_batch`` users, on CUDA when present (``device="auto"``) and the CPU
otherwise. The ``raw`` encoder (no artifact) passes the normalised state
through unchanged: the baseline every learned kind must beat.

    >>> import numpy as np
    >>> from state.features import FeatureSpec
    >>> from state.user_store import Features
    >>> spec = FeatureSpec()
    >>> enc = Encoder.raw(spec)
    >>> f = Features(np.ones((2, spec.feature_width), np.float32),
    ...              np.full((2, spec.item_history), -1, np.int32), np.zeros((2, spec.item_history), np.float32))
    >>> enc.encode(f).shape == (2, spec.feature_width), enc.version
    (True, 'raw')
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np

from state.features import FeatureSpec
from state.user_store import Features

if TYPE_CHECKING:
    import torch

    from encoders.artifact import EncoderArtifact

# torch is imported by the encoders that run it, not here: a consumer on the raw encoder starts
# without it (about 1.6 s of import on the reference machine, at every start and restart)

__all__ = ["Encoder", "load_encoder", "resolve_device"]


def resolve_device(device: str) -> torch.device:
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("encoder device 'cuda' requested but CUDA is not available")
    return torch.device(device)


class Encoder:
    """A loaded model plus the feature configuration it expects."""

    def __init__(self, spec: FeatureSpec, module: torch.nn.Module | None, *, kind: str, version: str, dim: int,
                 device: str = "auto", max_batch: int = 1024) -> None:
        self.spec = spec
        self.kind = kind
        self.version = version
        self.dim = dim
        self.max_batch = max_batch
        self.device: Any = resolve_device(device) if module is not None else "cpu"
        self.module = module.to(self.device).eval() if module is not None else None
        #: whether the model reads the recent-item columns of :class:`Features` (the raw encoder and the
        #: state autoencoder do not: callers may leave them empty, ``UserStore.features(rows, items=False)``)
        self.uses_items = module is not None and bool(getattr(module, "uses_items", True))

    @classmethod
    def raw(cls, spec: FeatureSpec) -> Encoder:
        return cls(spec, None, kind="raw", version="raw", dim=spec.feature_width, device="cpu")

    @classmethod
    def from_artifact(cls, art: EncoderArtifact, *, device: str = "auto", max_batch: int = 1024) -> Encoder:
        from encoders.models import build_model

        module = build_model(art.kind, art.feature_spec, art.config)
        module.load_state_dict(art.state_dict)
        dim = int(art.config.get("dim", 0)) or _probe_dim(module, art.feature_spec)
        return cls(art.feature_spec, module, kind=art.kind, version=art.version, dim=dim, device=device, max_batch=max_batch)

    def encode(self, f: Features) -> np.ndarray:
        """Embeddings (float32, one row per user) of a batch of features."""
        if self.module is None:
            return f.dense.astype(np.float32, copy=False)
        import torch

        n = len(f)
        out = np.empty((n, self.dim), dtype=np.float32)
        dev = self.device
        with torch.inference_mode():
            for s in range(0, n, self.max_batch):
                e = min(n, s + self.max_batch)
                z = self.module(
                    torch.from_numpy(np.ascontiguousarray(f.dense[s:e])).to(dev),
                    torch.from_numpy(np.ascontiguousarray(f.item_tokens[s:e])).to(dev),
                    torch.from_numpy(np.ascontiguousarray(f.item_weights[s:e])).to(dev),
                )
                out[s:e] = z.float().cpu().numpy()
        return out


def _probe_dim(module: torch.nn.Module, spec: FeatureSpec) -> int:
    import torch

    with torch.inference_mode():
        z = module(torch.zeros(1, spec.feature_width), torch.full((1, spec.item_history), -1, dtype=torch.int32),
                   torch.zeros(1, spec.item_history))
    return int(z.shape[1])


def load_encoder(path: str | os.PathLike[str] | None, *, expected_spec: FeatureSpec | None = None,
                 default_spec: FeatureSpec | None = None, device: str = "auto", max_batch: int = 1024) -> Encoder:
    """The encoder the consumer runs: the artifact at ``path``, or the raw encoder when no path is given."""
    if not path:
        return Encoder.raw(expected_spec or default_spec or FeatureSpec())
    from encoders.artifact import load_artifact

    return Encoder.from_artifact(load_artifact(path, expected_spec=expected_spec), device=device, max_batch=max_batch)
