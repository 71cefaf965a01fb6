"""User ids as the store holds them (UTF-8 bytes) and their stable 64-bit keys."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

__all__ = ["encode_ids", "as_encoded_ids", "user_keys", "raw_user_keys"]


def encode_ids(user_ids: Iterable[str]) -> list[bytes]:
    """Ids as the store holds them: UTF-8 bytes (a ``bytes`` object is 16 bytes smaller than its ``str``)."""
    return [u.encode("utf-8", "surrogatepass") for u in user_ids]


def as_encoded_ids(user_ids: list[str] | list[bytes]) -> list[bytes]:
    """Ids given either way (all ``str``, or all already encoded, as the changelog keys them) as
    :func:`encode_ids` gives them; encoded ones are passed through, not copied.

    >>> as_encoded_ids(["a", "é"]) == as_encoded_ids([b"a", "é".encode()]) == [b"a", b"\\xc3\\xa9"]
    True
    """
    return user_ids if user_ids and isinstance(user_ids[0], bytes) else encode_ids(user_ids)  # type: ignore[return-value,arg-type]


def user_keys(user_ids: Iterable[str]) -> np.ndarray:
    """uint64 key of each user id (the first 8 bytes of its BLAKE2b digest), to tag per-user rows that
    live in plain numpy buffers (recent-embedding rings) so that an erasure can find and drop them.
    Stable across processes (unlike ``hash``); not a pseudonym: the id it is taken of already is one
    when pseudonymisation is on.

    >>> k = user_keys(["a", "b", "a"]); k.dtype.name, bool(k[0] == k[2] != k[1])
    ('uint64', True)
    """
    return raw_user_keys(encode_ids(user_ids))


def raw_user_keys(raw: Iterable[bytes]) -> np.ndarray:
    """:func:`user_keys` of ids already UTF-8 encoded (as the store and the changelog hold them).

    >>> bool(raw_user_keys([b"a"])[0] == user_keys(["a"])[0])
    True
    """
    b2 = hashlib.blake2b
    return np.frombuffer(b"".join([b2(u, digest_size=8).digest() for u in raw]), dtype="<u8").astype(np.uint64)
