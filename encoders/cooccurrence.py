"""Co-occurrence item vectors: the item side of a truncated SVD of the log's user x item matrix.

A user's truncated-SVD factors are ``x @ V`` (``x``: the binary row of the
items the user touched, ``V``: the right singular vectors), i.e. the *sum* of
the vectors ``V[i]`` of the user's items, so pooling these item vectors over a
user's recent items is the SVD embedding of the user restricted to those items
(the batch reference of ``segstream evaluate movielens``, learned here from the
recorded log alone). Items that the same users touch get close vectors.

    >>> import numpy as np
    >>> # users 0-2 touch items 0-2, users 3-5 touch items 3-5
    >>> seq = np.array([0, 1, 2] * 3 + [3, 4, 5] * 3); starts = np.arange(6) * 3; lengths = np.full(6, 3)
    >>> v = co_occurrence_vectors(seq, starts, lengths, vocab_size=6, dim=2, seed=0)
    >>> v.shape
    (6, 2)
    >>> u = v / np.linalg.norm(v, axis=1, keepdims=True)
    >>> bool(abs(u[0] @ u[1]) > 0.99 and abs(u[0] @ u[4]) < 0.01)
    True
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import svds

__all__ = ["co_occurrence_vectors"]


def co_occurrence_vectors(sequence: np.ndarray, starts: np.ndarray, lengths: np.ndarray, *, vocab_size: int,
                          dim: int, seed: int = 0) -> np.ndarray:
    """float32 [vocab_size, dim]: each item's right-singular-vector coordinates of the binary user x item matrix.

    ``sequence[starts[u] : starts[u] + lengths[u]]`` are user ``u``'s items (vocabulary indices, repeats
    allowed: a user counts once per item). Components beyond the matrix's rank are zero; the SVD's
    start vector is seeded, so the result is reproducible.
    """
    users = np.repeat(np.arange(len(lengths)), lengths)
    x = sp.csr_matrix((np.ones(len(sequence), np.float64), (users, np.asarray(sequence, np.int64))),
                      shape=(len(lengths), vocab_size))
    x.sum_duplicates()
    x.data[:] = 1.0
    out = np.zeros((vocab_size, dim), np.float32)
    rank = min(dim, min(x.shape) - 1)  # svds needs k < min(shape)
    if rank < 1 or x.nnz == 0:
        return out
    v0 = np.random.default_rng([seed, 17]).standard_normal(min(x.shape))
    _, s, vt = svds(x, k=rank, v0=v0)
    order = np.argsort(-s)  # svds returns ascending singular values: largest first, like TruncatedSVD
    out[:, :rank] = vt[order].T
    return out
