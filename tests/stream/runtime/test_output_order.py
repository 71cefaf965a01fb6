"""Within a micro-batch, each user's ``user-segments`` records follow its events: a delete followed by
events publishes the tombstone first and then the new first assignment; events followed by a delete
end on the tombstone. Checked at the OutputWriter's boundary with a plain fake publisher, and through
the broker by reading the output topic back."""

from __future__ import annotations

import collections

import msgpack
import numpy as np

from helpers import RecordingPublisher, SegstreamProcess, pack_events, produce, read_topic
from stream.contracts.user_segments import decode_segment_event
from stream.kafka.records import Records
from stream.runtime.outputs import OutputWriter
from stream.runtime.pipeline import Pipeline
from stream.settings import Settings

T0 = 1.7e9


def _records(events: list[dict], first_offset: int) -> Records:
    values = pack_events(events)
    offsets = first_offset + np.arange(len(values), dtype=np.int64)
    return Records.single("events", 0, offsets, np.zeros(len(values), np.int64), [None] * len(values), values)


def _per_key(sent: list[tuple[str, bytes | None, bytes | None]], topic: str) -> dict[bytes, list[dict | None]]:
    out: dict[bytes, list[dict | None]] = collections.defaultdict(list)
    for t, key, value in sent:
        if t == topic:
            assert key is not None
            out[key].append(None if value is None else decode_segment_event(value))
    return out


def test_outputs_of_a_batch_follow_each_users_event_order():
    settings = Settings(segments=2, warmup_users=4, hysteresis=0.0)
    pipeline = Pipeline.from_settings(settings)
    publisher = RecordingPublisher()
    writer = OutputWriter(publisher, settings)  # type: ignore[arg-type]

    def run(events: list[dict], first_offset: int) -> None:
        records = _records(events, first_offset)
        writer.write(pipeline.process_records(records.values), records, emitted_at=T0 + 1000)

    first = [{"user_id": f"u{i}", "action": "view" if i % 2 else "purchase", "ts": T0 + i, "item_id": i}
             for i in range(8)]
    run(first, 0)
    assert all(pipeline.segment_of(f"u{i}") is not None for i in range(8))
    publisher.sent.clear()

    run([{"user_id": "u1", "action": "delete", "ts": T0 + 20},  # delete, then events
         {"user_id": "u1", "action": "purchase", "ts": T0 + 21, "item_id": 3},
         {"user_id": "u2", "action": "view", "ts": T0 + 22, "item_id": 5},  # events, then delete
         {"user_id": "u2", "action": "purchase", "ts": T0 + 23, "item_id": 6},
         {"user_id": "u2", "action": "delete", "ts": T0 + 24},
         {"user_id": "u3", "action": "delete", "ts": T0 + 25},  # delete, events, delete
         {"user_id": "u3", "action": "view", "ts": T0 + 26, "item_id": 1},
         {"user_id": "u3", "action": "delete", "ts": T0 + 27},
         {"user_id": "new", "action": "view", "ts": T0 + 28, "item_id": 2}], 8)

    got = _per_key(publisher.sent, settings.output_topic)
    restarted = got[b"u1"]
    assert restarted[0] is None and len(restarted) == 2  # the tombstone first ...
    assert restarted[1] is not None and restarted[1]["seq"] == 1 and restarted[1]["previous_segment"] is None
    assert pipeline.segment_of("u1") == restarted[1]["segment"]  # ... and the topic ends where segstream is
    assert got[b"u2"] == [None] and pipeline.segment_of("u2") is None  # its events before the delete are dropped
    assert got[b"u3"] == [None] and pipeline.segment_of("u3") is None
    assert [v["seq"] for v in got[b"new"]] == [1]  # users without a delete are untouched by the rule


def test_replay_writes_each_users_records_in_event_order(tmp_path):
    from eventlogs.recorded import write_events
    from stream.runtime.replay import replay_log

    events = [{"user_id": f"u{i % 8}", "action": "view" if i % 3 else "purchase", "ts": T0 + i, "item_id": i % 5}
              for i in range(40)]
    events += [{"user_id": "u1", "action": "delete", "ts": T0 + 50},
               {"user_id": "u1", "action": "view", "ts": T0 + 51, "item_id": 4}]
    log, out = tmp_path / "log.msgpack", tmp_path / "out.msgpack"
    write_events(log, events)
    replay_log(Settings(segments=2, warmup_users=4, hysteresis=0.0, batch_max_events=100), log, out, clock="event")
    mine = [value for key, value in msgpack.Unpacker(open(out, "rb")) if key == b"u1"]
    assert mine[-2] is None  # the delete and the event after it came in one batch
    last = decode_segment_event(mine[-1])
    assert last["seq"] == 1 and last["previous_segment"] is None


def test_delete_and_later_events_in_one_batch_reach_the_topic_in_event_order(broker, topics, tmp_path, kafka_client):
    broker.create(topics)
    users = [f"p{i}" for i in range(10)]
    # block 0 (offsets 0-99): every user gets a first assignment
    events = [{"user_id": users[i % 10], "action": ["view", "purchase"][i % 2], "ts": T0 + i,
               "item_id": i % 7, "categories": [f"c{i % 3}"]} for i in range(100)]
    # block 1 (offsets 100-199): p1 deleted then active again, p2 active then deleted
    block = [{"user_id": "p1", "action": "delete", "ts": T0 + 100},
             {"user_id": "p1", "action": "view", "ts": T0 + 101, "item_id": 2, "categories": ["c1"]},
             {"user_id": "p2", "action": "view", "ts": T0 + 102, "item_id": 3, "categories": ["c2"]},
             {"user_id": "p2", "action": "delete", "ts": T0 + 103}]
    block += [{"user_id": users[3 + i % 7], "action": "view", "ts": T0 + 104 + i, "item_id": i % 7,
               "categories": [f"c{i % 3}"]} for i in range(100 - len(block))]
    events += block
    produce(broker.bootstrap, topics["input"], pack_events(events))
    proc = SegstreamProcess(broker.settings(topics), "--warmup-users", "6", "--segments", "2",
                            "--hysteresis", "0", "--aligned-batches", "true", "--batch-max-events", "100",
                            "--batch-max-wait-ms", "1500", "--checkpoint-dir", str(tmp_path))
    try:
        proc.wait_metric("segstream_events_consumed_total", lambda v: v >= len(events))
        proc.wait_metric("segstream_offset_commits_total", lambda v: v >= 2)
        m = proc.metrics()
        code, _, err = proc.terminate()
    finally:
        proc.kill()
    assert code == 0, err[-3000:]
    assert m["segstream_users_erased_total"] == 2 and m["segstream_users_tracked"] == 9

    out = read_topic(broker.bootstrap, topics["output"])
    per_key: dict[bytes, list[dict | None]] = collections.defaultdict(list)
    for r in out:  # one partition: topic order is publish order
        per_key[r.key].append(None if r.value is None else decode_segment_event(r.value))
    p1 = per_key[b"p1"]
    assert p1[0] is not None and p1[0]["seq"] == 1  # its first life
    tomb = [i for i, v in enumerate(p1) if v is None]
    assert len(tomb) == 1
    after = p1[tomb[0] + 1:]
    assert after and after[0]["seq"] == 1 and after[0]["previous_segment"] is None  # the new life, after the tombstone
    p2 = per_key[b"p2"]
    assert p2[-1] is None and p2.count(None) == 1  # the topic ends on "erased" for the erased user
    for key, values in per_key.items():  # and per key, seq counts up by one within each life
        life: list[int] = []
        for v in values:
            if v is None:
                life = []
                continue
            assert v["seq"] == len(life) + 1, (key, values)
            life.append(v["seq"])
