"""How the run loop restores the partitions it is assigned, and drops the ones it loses (a part of
:class:`~stream.runtime.runner.StreamRunner`, kept apart because it is one concept).

With the state changelog (the default) a partition is restored from Kafka alone: each assigned
changelog partition is read to its end, its last complete checkpoint is loaded, the last marker's
outbox is re-published, and the input is sought to the marker's offset
(:meth:`PartitionRestore._restore_changelog`; a local snapshot, when one is configured, only shortens
the read). Without it, from the newest local snapshot at or before the committed offset.
docs/recovery.md describes the order and why it keeps the output contract.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from stream.kafka import TopicPartition
from stream.kafka.partition_reader import read_partitions
from stream.kafka.records import Records
from stream.runtime.changelog import decode_partition
from stream.runtime.changelog_cache import base_records, covers, marker_ck, model_of

__all__ = ["PartitionRestore"]

log = logging.getLogger("stream.runtime.runner")  # the run loop's logger: one source for its records


class PartitionRestore:
    """The run loop's restore and drop of partitions; :class:`~stream.runtime.runner.StreamRunner`
    supplies the pipeline, consumer, changelog, local checkpoints, outputs and offset books."""

    def _drop(self, tp: TopicPartition, kind: str) -> None:
        n = self.pipeline.drop_partition(tp.partition)
        self._state_offsets.pop(tp, None)
        self._positions.pop(tp, None)
        self._marked.pop(tp, None)
        self._buffer.pop(tp, None)
        self._deadline.pop(tp, None)
        self._restoring.pop(tp, None)
        if self.changelog is not None:
            self.changelog.forget_partition(tp.partition)
        log.info("partition %s %s: dropped the state of %d users%s", tp, kind, n,
                 "" if kind == "revoked" else " (not committed)", extra={"partition": tp.partition})

    def _restore(self, tps: set[TopicPartition]) -> None:
        """Load each partition's snapshot at or before its committed offset, then seek there.

        The state is complete once the consumer's position reaches the committed offset:
        records between the snapshot and the commit (normally none) are processed again as
        usual, and their outputs carry the same change ids as the first time.
        """
        t0 = time.perf_counter()
        committed = {tp: self.consumer.committed(tp) for tp in tps}
        for tp in tps:
            self._buffer.pop(tp, None)
            self._deadline.pop(tp, None)
            # a partition may come back while this member still holds users of it: start clean
            if len(self.pipeline.store.rows_of_partition(tp.partition)):
                self.pipeline.drop_partition(tp.partition)
        # with the changelog, a local snapshot is only a cache of it (read in _restore_changelog)
        chosen = {tp: (self.checkpoints.best(tp.partition, c) if self.checkpoints and self.changelog is None else None)
                  for tp, c in committed.items()}
        snaps = [s for s in chosen.values() if s is not None]
        fresh = self.pipeline.model is None and len(self.pipeline.store) == 0 and self.pipeline.events_seen == 0
        exact = None
        layout = None
        if fresh and snaps and self.checkpoints is not None:
            newest = max(snaps, key=lambda s: s.ckpt)
            state = self.checkpoints.load_global(newest.ckpt)
            if state is not None:
                self.pipeline.load_global_state(state)
                self.metrics.drift.load_state(state.get("drift"))
                exact, layout = newest.ckpt, state["layout"]
        users = 0
        from_log = {tp for tp, snap in chosen.items() if snap is None} if self.changelog is not None else set()
        if from_log:
            users += self._restore_changelog(from_log, committed)
        for tp, snap in sorted(chosen.items(), key=lambda x: x[0].partition):
            if committed[tp] is not None:
                self._positions[tp] = committed[tp]
            if tp in from_log:
                continue
            if snap is None:
                c = committed[tp]
                self._state_offsets[tp] = c if c is not None else -1
                # records fetched along with this assignment were dropped: rewind to where they started
                if c is not None:
                    self.consumer.seek(tp, c)
                else:
                    self.consumer.seek_to_beginning(tp)
                if c is not None and self.checkpoints is not None:
                    log.warning("no snapshot of partition %s at or before committed offset %d: its users start empty",
                                tp, c, extra={"partition": tp.partition, "offset": c})
                continue
            users += self.pipeline.import_users(snap.load()["users"], keep_rows=snap.ckpt == exact)
            self.consumer.seek(tp, snap.offset)
            self._state_offsets[tp] = snap.offset
            if committed[tp] is not None and committed[tp] > snap.offset:
                self._restoring[tp] = committed[tp]
        self.pipeline.finish_restore(layout)
        self.metrics.restores.inc(len(tps))
        self.metrics.users_tracked.set(len(self.pipeline.store))
        log.info("restored %d partitions (%d users) in %.3fs", len(tps), users, time.perf_counter() - t0, extra={
            "partitions": sorted(tp.partition for tp in tps),
            "offsets": {tp.partition: (s.offset if s else committed[tp]) for tp, s in chosen.items()}})

    def _restore_changelog(self, tps: set[TopicPartition], committed: dict[TopicPartition, int | None]) -> int:
        """Restore partitions from the state changelog, with nothing local: read each changelog partition
        to its end, load the last complete checkpoint (:mod:`stream.runtime.changelog`), seek the input to
        the offset that checkpoint covers. Without a checkpoint: from the committed offset with an empty
        state (or from the beginning when nothing was committed either)."""
        assert self.changelog is not None
        parts = sorted(tp.partition for tp in tps)
        t0 = time.perf_counter()
        states, cached = self._read_changelog(parts)
        read_s = time.perf_counter() - t0
        # the last marker's outbox first, before any input: its writer may have died before publishing it
        resend = [s.outbox for s in states if s.outbox[0]]
        if resend:
            self.outputs.publish([k for keys, _ in resend for k in keys], [v for _, vals in resend for v in vals])
            self.publisher.confirm()
            log.info("re-published the outbox of the last checkpoint of partitions %s (%d records)",
                     [s.partition for s in states if s.outbox[0]], sum(len(k) for k, _ in resend),
                     extra={"partitions": parts})
        users = self.changelog.restore(states)
        for st in states:
            tp = TopicPartition(self.settings.input_topic, st.partition)
            c = committed[tp]
            start = st.offset if st.offset is not None else c
            if start is None:
                self._state_offsets[tp] = -1
                self.consumer.seek_to_beginning(tp)
                continue
            if st.offset is None:
                log.warning("no changelog checkpoint of partition %s at committed offset %d: its users start empty",
                            tp, c, extra={"partition": tp.partition, "offset": c})
            self.consumer.seek(tp, start)
            self._state_offsets[tp] = start
            if st.offset is not None:
                self._marked[tp] = st.offset
            if c is not None and c > start:
                self._restoring[tp] = c
        log.info("restored %d users of partitions %s from changelog %s (%d records, %d partitions from the local "
                 "cache and the changelog after it, read in %.3fs, loaded in %.3fs)",
                 users, parts, self.changelog.topic, sum(s.records for s in states), cached, read_s,
                 time.perf_counter() - t0 - read_s, extra={
                     "partitions": parts, "offsets": {s.partition: s.offset for s in states}})
        return users

    def _read_changelog(self, parts: list[int]) -> tuple[list[Any], int]:
        """Each partition's restored state: from the local cache (the newest snapshot, standing for the
        changelog up to the marker it names) and the changelog from that marker on when the marker is
        there (:mod:`stream.runtime.changelog_cache`), otherwise from the whole changelog. Returns the states
        and how many partitions the cache served."""
        assert self.changelog is not None
        cl, dtype = self.changelog, self.changelog.dtype
        cache: dict[int, tuple[Any, dict[str, Any], int]] = {}
        for p in parts if self.checkpoints is not None else ():
            snaps = self.checkpoints.snapshots(p)  # type: ignore[union-attr]
            if snaps:
                doc = snaps[-1].load()
                at = covers(doc, cl.topic)
                if at is not None:
                    cache[p] = (snaps[-1], doc, at)
        starts = {p: c[2] for p, c in cache.items()}
        records, ends = read_partitions(self.settings, cl.topic, parts, **({"start": starts} if starts else {}))
        states, full = [], []
        for p in parts:
            if p not in cache:
                states.append(decode_partition(p, records[p], ends.get(p, 0), dtype))
                continue
            snap, doc, at = cache[p]
            model = model_of(self.checkpoints.load_global(snap.ckpt))  # type: ignore[union-attr]
            if model is None or marker_ck(records[p], at) != doc["changelog"]["ck"]:
                log.info("the local snapshot of partition %d does not match changelog offset %d: reading the whole "
                         "changelog partition", p, at, extra={"partition": p})
                full.append(p)
                continue
            states.append(decode_partition(p, Records.concat([base_records(cl, doc, model, p), records[p]]),
                                           ends.get(p, 0), dtype))
        if full:
            records, ends = read_partitions(self.settings, cl.topic, full)
            states += [decode_partition(p, records[p], ends.get(p, 0), dtype) for p in full]
        return sorted(states, key=lambda s: s.partition), len(cache) - len(full)
