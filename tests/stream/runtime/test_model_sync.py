"""The model topic on a real broker, on either Kafka client: members exchange summaries and a version
through :class:`stream.runtime.model_sync.ModelSync`, whose reader is the configured client's, and a
member that starts later reads the topic to its end before it does anything else."""

from __future__ import annotations

import time

import numpy as np
import pytest

from state.dbstream import OnlineDBSTREAM
from state.global_dbstream import GlobalDBSTREAM
from state.global_model import model_digest
from stream.kafka.clients import Publisher, ensure_topics, make_stream_producer
from stream.runtime.model_sync import ModelSync

pytestmark = pytest.mark.integration


def _member(name: str, centre: float | None) -> GlobalDBSTREAM:
    seg = GlobalDBSTREAM(OnlineDBSTREAM(2, radius=0.1, warmup_users=60, recluster_events=60), name)
    if centre is not None:
        x = np.random.default_rng(len(name)).normal(centre, 0.02, (60, 2)).astype(np.float32)
        seg.add_warmup([f"{name}{i}" for i in range(60)], x, event_time=1.0, events=60)
    return seg


def test_members_agree_on_a_version_through_the_model_topic(broker, topics, kafka_client):
    settings = broker.settings(topics, global_model=True, clusterer="dbstream", model_topic="model-" + topics["group"])
    ensure_topics(settings, {settings.model_topic: 1})
    producer = make_stream_producer(settings)
    publisher = Publisher(producer)
    syncs = [ModelSync(settings, _member(n, c), publisher, input_partitions=2) for n, c in (("a", 0.0), ("b", 1.0))]
    late = None
    try:
        reader = type(syncs[0].consumer).__name__
        assert reader == ("ConfluentConsumer" if kafka_client == "confluent" else "KafkaConsumer")
        for s in syncs:
            s.catch_up(timeout_s=30.0)
        deadline = time.monotonic() + 60.0
        while time.monotonic() < deadline and not all(s.segmenter.model for s in syncs):
            syncs[0].pump(leader=True, partitions=[0])
            syncs[1].pump(leader=False, partitions=[1])
            publisher.confirm()
        models = [s.segmenter.model for s in syncs]
        assert all(m is not None and m.version == 1 and m.k == 2 for m in models), models
        assert len({model_digest(m.centroids, m.segment_ids) for m in models}) == 1
        assert sorted(np.round(np.abs(models[0].centroids[:, 0]), 1).tolist()) == [0.0, 1.0]
        late = ModelSync(settings, _member("late", None), publisher, input_partitions=2)
        assert late.catch_up(timeout_s=30.0) >= 3  # two summaries and v1, read before anything else
        assert late.segmenter.model is not None and late.segmenter.model.version == 1
        assert set(late.segmenter.silence()) == {"a", "b"}
    finally:
        for s in syncs + ([late] if late else []):
            s.close()
        producer.close()
