"""``SegmentTable``: every user's current segment, read from ``user-segments`` and kept up to date.

For recommenders: it needs the Kafka settings and the contracts, not the
model (importing it does not import torch or river). Construction bootstraps:
it reads every partition of the topic from the beginning to the end the
broker reports (:class:`stream.kafka.topic_reader.TopicReader`: no consumer
group, no commits; the end from the fetch responses' high-water marks, which
the embedded broker reports correctly). Afterwards it follows the topic, in
one of two ways:

- call :meth:`SegmentTable.poll` from your own loop (single-threaded), or
- :meth:`SegmentTable.start` a background thread that follows until
  :meth:`SegmentTable.close`; reads (:meth:`get`, :meth:`changes_since`, ...)
  are safe from any thread meanwhile.

The rules it applies (last value per key, tombstones, ``seq`` and
``change_id``) are :class:`stream.client.index.SegmentIndex`'s.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from types import TracebackType

from stream.client.index import Changes, Outcome, SegmentIndex, SegmentInfo, TableStats
from stream.kafka.topic_reader import TopicReader, TopicRecord
from stream.settings import Settings

__all__ = ["SegmentTable", "OnChange"]

log = logging.getLogger(__name__)

#: called with (user id, its new SegmentInfo, or None when the user was erased), on the following thread
OnChange = Callable[[str, SegmentInfo | None], None]


class SegmentTable:
    """Users -> current segment from the ``user-segments`` topic (``topic``, default the output topic setting).

    ``bootstrap_timeout_s`` bounds the wait for the topic and the read to its
    end (``TimeoutError``; a missing topic is :class:`stream.kafka.topic_reader.TopicNotFound`).
    ``duplicate_window``: how many recent change ids are remembered to tell an
    exact re-send from an out-of-order record.
    """

    def __init__(self, settings: Settings, *, topic: str | None = None, bootstrap_timeout_s: float = 60.0,
                 duplicate_window: int = 100_000, reader: TopicReader | None = None) -> None:
        self.topic = topic or settings.output_topic
        self._lock = threading.RLock()
        self._index = SegmentIndex(duplicate_window)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None  #: what stopped the background thread, if anything did
        self._reader = reader or TopicReader(settings, self.topic, timeout_s=bootstrap_timeout_s,
                                             client_id=f"{settings.client_id}-segment-table")
        try:
            n = self._reader.read_to_end(lambda records: self._apply(records, collect=False),
                                         timeout_s=bootstrap_timeout_s)
        except BaseException:
            self._reader.close()
            raise
        log.info("segment table: read %s to its end: %d records, %d users", self.topic, n, len(self),
                 extra={"topic": self.topic, "positions": self.cursor()})

    # -- following ------------------------------------------------------------
    def _apply(self, records: list[TopicRecord], collect: bool = True) -> list[tuple[str, SegmentInfo | None]]:
        """Apply records under the lock; with ``collect``, return the users they changed (for ``on_change``)."""
        changed: list[tuple[str, SegmentInfo | None]] = []
        apply = self._index.apply
        with self._lock:
            for r in records:
                outcome = apply(r.key, r.value, r.partition, r.offset)
                if collect and (outcome == Outcome.APPLIED or outcome == Outcome.REMOVED):
                    user = r.key.decode("utf-8")  # type: ignore[union-attr]  # applied: the key is valid
                    changed.append((user, self._index.get(user)))
        return changed

    def poll(self, timeout_s: float = 0.0, on_change: OnChange | None = None) -> int:
        """Apply what arrived (waiting up to ``timeout_s`` if nothing has); returns how many users changed."""
        if self._thread is not None:
            raise RuntimeError("the table follows the topic in its background thread: read it, do not poll it")
        return self._poll(timeout_s, on_change)

    def _poll(self, timeout_s: float, on_change: OnChange | None) -> int:
        changed = self._apply(self._reader.poll(timeout_s))
        if on_change is not None:
            for user, info in changed:
                on_change(user, info)
        return len(changed)

    def follow(self, stop: threading.Event | None = None, on_change: OnChange | None = None,
               poll_s: float = 0.5) -> None:
        """Poll until ``stop`` is set (blocks the calling thread; :meth:`start` runs it in its own)."""
        stop = stop or self._stop
        while not stop.is_set():
            self._poll(poll_s, on_change)

    def start(self, on_change: OnChange | None = None) -> SegmentTable:
        """Follow the topic in a daemon thread until :meth:`close`; returns the table."""
        if self._thread is not None:
            return self

        def run() -> None:
            try:
                self.follow(self._stop, on_change)
            except BaseException as exc:  # kept for the owner to see; the table keeps answering from what it has
                self.error = exc
                log.exception("segment table: stopped following %s", self.topic)

        self._thread = threading.Thread(target=run, name="segment-table", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop following and close the consumer; what was read stays readable."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._reader.close()

    def __enter__(self) -> SegmentTable:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- reading ------------------------------------------------------------
    def get(self, user_id: str) -> SegmentInfo | None:
        """The user's current segment, or None (never seen, or erased)."""
        with self._lock:
            return self._index.get(user_id)

    def __len__(self) -> int:
        with self._lock:
            return len(self._index)

    def __contains__(self, user_id: object) -> bool:
        with self._lock:
            return user_id in self._index

    def sizes(self) -> dict[int, int]:
        """Segment id -> how many users it holds now."""
        with self._lock:
            return self._index.sizes()

    def cursor(self) -> dict[int, int]:
        """Where the table is (partition -> next offset): keep it and ask :meth:`changes_since` with it later."""
        with self._lock:
            return self._index.cursor

    def changes_since(self, cursor: Mapping[int, int] | None = None) -> Changes:
        """Users changed or erased at or after ``cursor`` (None: all), and the cursor to ask with next time."""
        with self._lock:
            return self._index.changes_since(cursor)

    @property
    def stats(self) -> TableStats:
        """Records read so far, by outcome (a copy)."""
        with self._lock:
            s = self._index.stats
            return TableStats(s.records, s.applied, s.removed, s.duplicates, s.stale, s.invalid, s.seq_gaps)
