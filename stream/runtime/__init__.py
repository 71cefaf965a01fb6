"""The run loop and everything it drives between the Kafka seam and the outputs.

- ``app``: :func:`run_consumer` assembles settings, pipeline, Kafka clients, metrics endpoint and loop
- ``runner``: :class:`StreamRunner`, the loop: poll, micro-batch, process, publish, checkpoint, commit;
  rebalances and restores
- ``pipeline``: :class:`Pipeline`, one micro-batch through events -> user state -> encoder -> clusters
- ``outputs``: what a processed batch publishes; ``checkpoints``: local snapshots tied to offsets
- ``replay``: a recorded log through the same pipeline without a broker (deterministic)
- ``summary``: :class:`RunSummary`, what ``run`` and ``replay`` report
- ``model_sync``: one segment model for the group through the model topic
- ``decode_worker``, ``dedup``, ``pseudonym``: decoding ahead in a child process, dropping
  re-delivered events, keyed pseudonyms for user ids
"""

from __future__ import annotations

from state.lazy import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "run_consumer": "stream.runtime.app",
    "StreamRunner": "stream.runtime.runner",
    "RunSummary": "stream.runtime.summary",
    "Pipeline": "stream.runtime.pipeline",
    "BatchResult": "stream.runtime.pipeline",
    "SegmentChanges": "stream.runtime.pipeline",
    "replay_log": "stream.runtime.replay",
    "OutputWriter": "stream.runtime.outputs",
    "CheckpointStore": "stream.runtime.checkpoints",
    "ModelSync": "stream.runtime.model_sync",
    "DecodeAhead": "stream.runtime.decode_worker",
    "DecodeWorker": "stream.runtime.decode_worker",
    "EventIdWindow": "stream.runtime.dedup",
    "Pseudonymiser": "stream.runtime.pseudonym",
})
