"""The Kafka seam: the one package of segstream that imports a Kafka client (kafka-python, confluent-kafka).

Everything else (the run loop, the model sync, the CLI) reaches Kafka through
the names below, so that a kafka-python upgrade touches this package only
(``tests/test_codebase.py`` fails on any other import of ``kafka``). Inside,
one module per concern:

- :mod:`~stream.kafka.consumer`: the consumer interface of the run loop:
  ``Consumer``, ``TopicPartition``, :func:`commit_offsets` (explicit offsets
  as ints), the errors a commit raises, the rebalance listener base;
- :mod:`~stream.kafka.clients`: client construction, topic set-up, and the
  :class:`Publisher` that confirms every send; ``make_stream_consumer`` /
  ``make_stream_producer`` build the run loop's clients on the client
  ``SEGSTREAM_KAFKA_CLIENT`` names;
- :mod:`~stream.kafka.confluent`, :mod:`~stream.kafka.confluent_admin`: the
  run loop's consumer and producer and start-up's admin calls over
  librdkafka, answering the same calls as kafka-python's (imported only when
  asked for); :mod:`~stream.kafka.security`: the security settings in
  librdkafka's spelling;
- :mod:`~stream.kafka.topics`: every topic's role and configuration (one
  table: compacted where a record is the latest per key), checked at start-up;
- :mod:`~stream.kafka.topic_reader`: a whole topic to its end and on, without
  a group (what :class:`stream.client.SegmentTable` reads through);
- :mod:`~stream.kafka.records`: fetched records as columns (:class:`Records`)
  and the v2 record batch decoder;
- :mod:`~stream.kafka.batch_produce`: a partition's records encoded as whole
  record batches;
- :mod:`~stream.kafka.compat`: every use of kafka-python's internals (the
  columnar fetch hook and the columnar produce), checked at start-up, with a
  fallback to the public API when a check fails;
- :mod:`~stream.kafka.lag`: the group's lag as the broker sees it, measured on a
  side thread with a consumer of its own (:class:`LagMonitor`);
- :mod:`~stream.kafka.rebalance`, :mod:`~stream.kafka.partitioning`,
  :mod:`~stream.kafka.embedded_broker`: assignment changes for the run loop,
  Kafka's key hash over numpy, and the Tansu broker process for tests and demos.
"""

from stream.kafka.clients import (
    Publisher,
    PublishError,
    ensure_topics,
    make_admin,
    make_consumer,
    make_producer,
    make_stream_consumer,
    make_stream_producer,
    verify_topics,
    wait_for_broker,
)
from stream.kafka.compat import install_columnar_fetch, use_columnar_produce
from stream.kafka.consumer import (
    CommitFailedError,
    Consumer,
    KafkaError,
    RebalanceListener,
    TopicPartition,
    commit_offsets,
)
from stream.kafka.lag import LagMonitor, LagProbe
from stream.kafka.rebalance import RebalanceTracker
from stream.kafka.records import Records, as_records
from stream.kafka.topic_reader import TopicNotFound, TopicReader, TopicRecord
from stream.kafka.topics import TOPIC_POLICIES, topic_plan

__all__ = [
    # the consumer interface of the run loop
    "Consumer", "TopicPartition", "commit_offsets", "CommitFailedError", "KafkaError", "RebalanceListener",
    "RebalanceTracker", "Records", "as_records",
    # clients and publishing
    "make_consumer", "make_producer", "make_stream_consumer", "make_stream_producer", "make_admin", "ensure_topics", "wait_for_broker", "Publisher", "PublishError",
    # topics: their policies, and reading one whole
    "TOPIC_POLICIES", "topic_plan", "verify_topics", "TopicReader", "TopicRecord", "TopicNotFound",
    # lag from the broker, on a side thread
    "LagMonitor", "LagProbe",
    # the fast paths (checked at start-up; see stream.kafka.compat)
    "install_columnar_fetch", "use_columnar_produce",
]
