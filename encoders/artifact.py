"""Encoder artifacts: one file with weights, feature configuration, version and checksum.

Saved with ``torch.save`` as plain containers of tensors, strings and numbers,
and loaded with ``torch.load(..., weights_only=True)``: loading never runs
arbitrary pickle. The checksum covers every field and every tensor byte, so a
tampered file is refused, and the feature configuration must match the
consumer's (a mismatch is a start-up error, not silently wrong features).

    >>> import tempfile, torch, os
    >>> from state.features import FeatureSpec
    >>> art = EncoderArtifact(kind="demo", feature_spec=FeatureSpec(), config={"dim": 2},
    ...                       state_dict={"w": torch.ones(2, 2)})
    >>> path = os.path.join(tempfile.mkdtemp(), "enc.pt")
    >>> save_artifact(art, path)
    >>> load_artifact(path).checksum == art.checksum
    True
    >>> load_artifact(path, expected_spec=FeatureSpec(category_buckets=64))
    Traceback (most recent call last):
    ...
    encoders.artifact.ArtifactError: ...feature configuration differs from the running one: category_buckets: 32 != 64
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any

import torch

from state.features import FeatureSpec

__all__ = ["EncoderArtifact", "ArtifactError", "save_artifact", "load_artifact", "FORMAT", "FORMAT_VERSION"]

FORMAT = "segstream-encoder"
FORMAT_VERSION = 1


class ArtifactError(RuntimeError):
    """The artifact is missing, corrupt, tampered with, or does not fit the running configuration."""


@dataclass(frozen=True)
class EncoderArtifact:
    kind: str
    feature_spec: FeatureSpec
    config: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def checksum(self) -> str:
        return _checksum(self)

    @property
    def version(self) -> str:
        """Short content hash: two artifacts with the same version hold the same model."""
        return self.checksum[:12]

    def to_payload(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "feature_spec": _jsonable(self.feature_spec.to_dict()),
            "config": _jsonable(self.config),
            "metadata": _jsonable(self.metadata),
            "state_dict": {k: v.detach().cpu().contiguous() for k, v in self.state_dict.items()},
            "checksum": self.checksum,
        }


def _jsonable(obj: Any) -> Any:
    """Round-trip through JSON so that what is hashed is exactly what is stored."""
    return json.loads(json.dumps(obj, sort_keys=True))


def _checksum(art: EncoderArtifact) -> str:
    h = hashlib.sha256()
    head = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": art.kind,
        "feature_spec": art.feature_spec.to_dict(),
        "config": art.config,
        "metadata": art.metadata,
    }
    h.update(json.dumps(head, sort_keys=True).encode())
    for name in sorted(art.state_dict):
        t = art.state_dict[name].detach().cpu().contiguous()
        h.update(f"\0{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_artifact(art: EncoderArtifact, path: str | os.PathLike[str]) -> None:
    """Write atomically (temporary file + rename), so a crash never leaves half a model."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    torch.save(art.to_payload(), tmp)
    os.replace(tmp, path)


def load_artifact(path: str | os.PathLike[str], expected_spec: FeatureSpec | None = None) -> EncoderArtifact:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ArtifactError(f"{path}: no such encoder artifact")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, or one that needs arbitrary pickle to load
        raise ArtifactError(f"{path}: not a loadable encoder artifact ({type(exc).__name__}: {str(exc)[:300]})") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise ArtifactError(f"{path}: not a segstream encoder artifact")
    if obj.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{path}: artifact format {obj.get('format_version')!r}, this build reads {FORMAT_VERSION}")
    try:
        art = EncoderArtifact(
            kind=str(obj["kind"]),
            feature_spec=FeatureSpec.from_dict(obj["feature_spec"]),
            config=dict(obj["config"]),
            state_dict=dict(obj["state_dict"]),
            metadata=dict(obj.get("metadata", {})),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"{path}: malformed artifact ({exc})") from None
    if art.checksum != obj.get("checksum"):
        raise ArtifactError(f"{path}: checksum mismatch (the file was modified or corrupted)")
    if expected_spec is not None and expected_spec != art.feature_spec:
        diff = "; ".join(art.feature_spec.differences(expected_spec))
        raise ArtifactError(f"{path}: the artifact's feature configuration differs from the running one: {diff}")
    return art
