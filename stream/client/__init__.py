"""For recommenders: the current segment of every user, read from segstream's ``user-segments`` topic.

Importable without the model stack (no torch, no river: a test checks it)::

    from stream.client import SegmentTable
    from stream.settings import Settings

    table = SegmentTable(Settings.from_env()).start()   # reads to the end, then follows
    info = table.get("u42")                              # SegmentInfo or None
    mark = table.cursor()
    ...
    changed = table.changes_since(mark)                  # .updated, .removed, .cursor

- :mod:`~stream.client.index`: the contract's rules over records in offset
  order (pure, no Kafka);
- :mod:`~stream.client.table`: :class:`SegmentTable`, those rules over the
  topic, through the Kafka seam.

docs/client.md describes the API and the rules.
"""

from stream.client.index import Changes, Outcome, SegmentIndex, SegmentInfo, TableStats
from stream.client.table import OnChange, SegmentTable

__all__ = ["SegmentTable", "SegmentInfo", "Changes", "TableStats", "SegmentIndex", "Outcome", "OnChange"]
