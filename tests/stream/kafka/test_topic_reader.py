"""TopicReader, and the tests' own reader (``helpers.read_topic``): a whole topic to its end, as the fetch responses
report it (correct on Tansu's multi-record batches)."""

from __future__ import annotations

import pytest

from helpers import produce, read_topic
from stream.kafka.clients import ensure_topics
from stream.kafka.topic_reader import TopicReader


@pytest.mark.integration
def test_reads_multi_record_batches_to_their_end_then_what_arrives(broker, topics):
    s = broker.settings(topics)
    ensure_topics(s, {topics["output"]: 2})
    sent = {0: 0, 1: 0}
    for part, n in ((0, 37), (1, 5), (0, 11)):  # each send lands as one multi-record batch
        produce(broker.bootstrap, topics["output"], [b"v%d" % i for i in range(n)], partition=part)
        sent[part] += n
    empty = f"{topics['output']}-empty"
    ensure_topics(s, {empty: 1})
    got: list = []
    reader = TopicReader(s, topics["output"])
    try:
        assert reader.read_to_end(got.extend, timeout_s=30) == 53
        assert reader.positions() == sent
        for part in (0, 1):
            assert [r.offset for r in got if r.partition == part] == list(range(sent[part]))
        produce(broker.bootstrap, topics["output"], [b"late"], keys=[b"k"], partition=1)
        late = []
        for _ in range(50):
            late += reader.poll(0.2)
            if late:
                break
        assert [(r.partition, r.offset, r.key, r.value) for r in late] == [(1, 5, b"k", b"late")]
    finally:
        reader.close()
    reader = TopicReader(s, empty)
    try:
        assert reader.read_to_end(got.extend, timeout_s=30) == 0 and reader.positions() == {0: 0}
    finally:
        reader.close()


@pytest.mark.integration
def test_the_tests_own_reader_stops_at_the_high_watermark_not_at_the_first_quiet_moment(broker, topics):
    """``helpers.read_topic``, which most integration tests read outputs with: with no idle time at all it
    still returns every record (more than one poll's worth), so a slow fetch cannot cut a read short."""
    ensure_topics(broker.settings(topics), {topics["output"]: 2})
    for part in (0, 1):
        produce(broker.bootstrap, topics["output"], [b"v%d" % i for i in range(700)], partition=part)
    got = read_topic(broker.bootstrap, topics["output"], idle_s=0.0)
    assert sorted((r.partition, r.offset) for r in got) == [(p, o) for p in (0, 1) for o in range(700)]
    assert len(read_topic(broker.bootstrap, topics["output"], expected=1)) == 1400
