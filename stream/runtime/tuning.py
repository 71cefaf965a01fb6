"""Process-wide tuning the hot path wants: torch and BLAS thread caps, the gc threshold.

Kept apart from :mod:`stream.runtime.pipeline` (which re-exports it) because it changes the
whole process, not one pipeline: the benchmarks apply it to their reference consumers too.
"""

from __future__ import annotations

import sys

from state.events import set_gc_threshold
from stream.settings import Settings

__all__ = ["tune_process"]


def tune_process(settings: Settings) -> None:
    """Process-wide settings the hot path wants: torch and BLAS thread caps, the gc threshold.

    Applied when a :class:`Pipeline` is built; ``bench.throughput`` applies it to its reference
    consumers too, so that a comparison does not hinge on which ran first in the process.
    """
    if settings.encoder_threads > 0:
        # torch's threads when torch runs here (a trained encoder, or torch already loaded); the raw encoder
        # runs none, and importing torch only to cap its threads costs 1.6 s at every start
        if settings.encoder or "torch" in sys.modules:
            import torch

            torch.set_num_threads(settings.encoder_threads)
        # numpy's BLAS too (segment assignment, consolidation): a multi-threaded OpenBLAS spin-waits on a
        # busy machine; measured 0.06-0.57 s instead of ~20 ms per consolidation at load 5 on 2 cores
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=settings.encoder_threads, user_api="blas")
    set_gc_threshold(settings.gc_threshold)  # process-wide, like the thread limits above
