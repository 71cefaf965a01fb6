"""One frozen, typed settings object for the whole consumer.

Every field names its environment variable and its default, so that the
configuration table in docs/configuration.md, the CLI flags and the container's environment
all come from this one place::

    >>> s = Settings.from_env({"SEGSTREAM_SEGMENTS": "16"})
    >>> s.segments, s.input_topic
    (16, 'user-events')
    >>> s.replace(segments=4).segments
    4
    >>> Settings.from_env({"SEGSTREAM_SEGMENTS": "many"})
    Traceback (most recent call last):
    ...
    stream.settings.SettingsError: SEGSTREAM_SEGMENTS='many': expected int
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Settings", "SettingsError", "setting_fields"]


class SettingsError(ValueError):
    """A setting could not be parsed or is out of range."""


def _opt(env: str, default: Any, help: str, *, group: str = "core", choices: tuple[str, ...] = ()) -> Any:
    return field(default=default, metadata={"env": env, "help": help, "group": group, "choices": choices})


@dataclass(frozen=True)
class Settings:
    # --- Kafka -------------------------------------------------------------
    bootstrap: str = _opt("SEGSTREAM_BOOTSTRAP", "127.0.0.1:9092", "Kafka bootstrap servers (host:port[,host:port]).", group="kafka")
    input_topic: str = _opt("SEGSTREAM_INPUT_TOPIC", "user-events", "Topic of behaviour events (input contract v1).", group="kafka")
    output_topic: str = _opt("SEGSTREAM_OUTPUT_TOPIC", "user-segments", "Topic of segment-change events (output contract v1).", group="kafka")
    dlq_topic: str = _opt("SEGSTREAM_DLQ_TOPIC", "user-events-dlq", "Dead-letter topic for records that break the input contract.", group="kafka")
    group_id: str = _opt("SEGSTREAM_GROUP_ID", "segstream", "Consumer group id.", group="kafka")
    client_id: str = _opt("SEGSTREAM_CLIENT_ID", "segstream", "Kafka client id (shows up in broker logs and quotas).", group="kafka")
    session_timeout_ms: int = _opt("SEGSTREAM_SESSION_TIMEOUT_MS", 6000, "Consumer group session timeout.", group="kafka")
    heartbeat_interval_ms: int = _opt("SEGSTREAM_HEARTBEAT_INTERVAL_MS", 1000, "Consumer group heartbeat interval.", group="kafka")
    max_poll_interval_ms: int = _opt("SEGSTREAM_MAX_POLL_INTERVAL_MS", 300000, "Longest allowed gap between polls before the group evicts this member.", group="kafka")
    security_protocol: str = _opt("SEGSTREAM_SECURITY_PROTOCOL", "PLAINTEXT", "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.", group="kafka", choices=("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"))
    kafka_client: str = _opt("SEGSTREAM_KAFKA_CLIENT", "kafka-python", "Kafka client of the run loop's consumer and producer: kafka-python, or confluent (confluent-kafka over librdkafka: pip install segstream[librdkafka]; stream/kafka/confluent.py). Topic set-up and the model sync follow it; the lag probe uses kafka-python either way.", group="kafka", choices=("kafka-python", "confluent"))
    sasl_mechanism: str = _opt("SEGSTREAM_SASL_MECHANISM", "", "SASL mechanism when a SASL protocol is used: PLAIN (the default), SCRAM-SHA-256, SCRAM-SHA-512; OAUTHBEARER (OIDC client credentials: SEGSTREAM_SASL_USERNAME is the client id, SEGSTREAM_SASL_PASSWORD the secret) and GSSAPI (Kerberos) with SEGSTREAM_KAFKA_CLIENT=confluent only.", group="kafka", choices=("", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI"))
    sasl_username: str = _opt("SEGSTREAM_SASL_USERNAME", "", "SASL user name.", group="kafka")
    sasl_password: str = _opt("SEGSTREAM_SASL_PASSWORD", "", "SASL password (prefer the environment over the command line).", group="kafka")
    sasl_oauthbearer_token_url: str = _opt("SEGSTREAM_SASL_OAUTHBEARER_TOKEN_URL", "", "OIDC token endpoint of SASL OAUTHBEARER (confluent client only).", group="kafka")
    sasl_kerberos_service_name: str = _opt("SEGSTREAM_SASL_KERBEROS_SERVICE_NAME", "kafka", "Kerberos service name of the brokers, SASL GSSAPI (confluent client only; SEGSTREAM_SASL_USERNAME is the principal).", group="kafka")
    sasl_kerberos_keytab: str = _opt("SEGSTREAM_SASL_KERBEROS_KEYTAB", "", "Keytab of the principal, SASL GSSAPI (confluent client only; empty: the ticket cache).", group="kafka")
    ssl_cafile: str = _opt("SEGSTREAM_SSL_CAFILE", "", "CA bundle to verify the brokers' certificates.", group="kafka")
    ssl_certfile: str = _opt("SEGSTREAM_SSL_CERTFILE", "", "Client certificate (mutual TLS).", group="kafka")
    ssl_keyfile: str = _opt("SEGSTREAM_SSL_KEYFILE", "", "Client private key (mutual TLS).", group="kafka")
    group_instance_id: str = _opt("SEGSTREAM_GROUP_INSTANCE_ID", "", "Static group membership (KIP-345): a restarted member with the same id takes its partitions back without waiting for the session timeout (empty: dynamic membership).", group="kafka")
    columnar_fetch: bool = _opt("SEGSTREAM_COLUMNAR_FETCH", True, "Decode fetched record batches a whole batch at a time into columns (stream/kafka/records.py) instead of kafka-python's record-at-a-time iterator (several times its consume rate: docs/performance.md). false: kafka-python's own decoding, as when the start-up check of kafka-python's internals fails (stream/kafka/compat.py: a warning, segstream_kafka_fast_path 0).", group="kafka")
    columnar_produce: bool = _opt("SEGSTREAM_COLUMNAR_PRODUCE", True, "Write each partition's segment events of a micro-batch as whole record batches (stream/kafka/batch_produce.py) instead of one KafkaProducer.send per event. false: one send per event, as when the start-up check of kafka-python's internals fails (stream/kafka/compat.py: a warning, segstream_kafka_fast_path 0).", group="kafka")
    decode_process: bool = _opt("SEGSTREAM_DECODE_PROCESS", True, "Decode the next micro-batch's events in a child process while this one is processed (stream/runtime/decode_worker.py); only with free-running batches and at least 2 CPUs (affinity, capped by the cgroup quota). Set false when instances share a host's cores (docs/known-limits.md). false: decode in the consumer process.", group="batching")
    create_topics: bool = _opt("SEGSTREAM_CREATE_TOPICS", True, "Create missing output and dead-letter topics at start-up.", group="kafka")

    # --- micro-batching ----------------------------------------------------
    batch_max_events: int = _opt("SEGSTREAM_BATCH_MAX_EVENTS", 5000, "Largest micro-batch, in events.", group="batching")
    batch_max_wait_ms: int = _opt("SEGSTREAM_BATCH_MAX_WAIT_MS", 20, "Longest a micro-batch waits to fill, counted from its oldest record's Kafka timestamp (a record that arrived while the loop was busy has already waited part of it); bounds latency. Under a backlog batches fill by count; a loop that keeps up runs more, smaller batches, each with its checkpoint.", group="batching")
    max_event_bytes: int = _opt("SEGSTREAM_MAX_EVENT_BYTES", 65536, "Records larger than this are dead-lettered as 'oversized'.", group="batching")
    max_clock_skew_s: float = _opt("SEGSTREAM_MAX_CLOCK_SKEW_S", 86400.0, "Events stamped further than this in the future (wall clock) are dead-lettered.", group="batching")
    min_event_ts: float = _opt("SEGSTREAM_MIN_EVENT_TS", 631152000.0, "Events stamped before this epoch second (default 1990-01-01) are dead-lettered.", group="batching")

    # --- user state --------------------------------------------------------
    half_life_s: float = _opt("SEGSTREAM_HALF_LIFE_S", 0.0, "Event-time half-life of the per-user state, in seconds (0: take the encoder artifact's).", group="state")
    max_users: int = _opt("SEGSTREAM_MAX_USERS", 1_000_000, "Most users held; the least recently active are evicted beyond this. A micro-batch with more users than this keeps its most recently active ones and evicts the others within the batch (warned once).", group="state")

    # --- encoder -----------------------------------------------------------
    encoder: str = _opt("SEGSTREAM_ENCODER", "", "Path of the encoder artifact (empty: raw normalised state, no model).", group="encoder")
    encoder_device: str = _opt("SEGSTREAM_ENCODER_DEVICE", "auto", "auto (CUDA when present), cpu or cuda.", group="encoder", choices=("auto", "cpu", "cuda"))
    encoder_batch: int = _opt("SEGSTREAM_ENCODER_BATCH", 1024, "Largest inference batch handed to the encoder.", group="encoder")
    encoder_threads: int = _opt("SEGSTREAM_ENCODER_THREADS", 1, "torch intra-op threads (0: torch's default). One thread leaves the other cores to the Kafka client and the broker; more threads spin-wait on a busy machine.", group="encoder")

    gc_threshold: int = _opt("SEGSTREAM_GC_THRESHOLD", 50000, "Python's generation-0 garbage-collection threshold (0: Python's default of 700). Decoding allocates a dict per event; at the default the collector runs every few hundred events and scans the whole heap often (docs/performance.md).", group="encoder")

    # --- segments ----------------------------------------------------------
    segments: int = _opt("SEGSTREAM_SEGMENTS", 8, "Number of segments (k).", group="segments")
    warmup_users: int = _opt("SEGSTREAM_WARMUP_USERS", 200, "Distinct users buffered before the segments are seeded (k-means++).", group="segments")
    learning_rate: float = _opt("SEGSTREAM_LEARNING_RATE", 0.02, "Step towards each learned point (river KMeans 'halflife').", group="segments")
    learn_sample: int = _opt("SEGSTREAM_LEARN_SAMPLE", 32, "Most embeddings per micro-batch fed to the river learner (seeded sample; river KMeans costs ~160 us per point at k=8, 32 dims).", group="segments")
    model_update_events: int = _opt("SEGSTREAM_MODEL_UPDATE_EVENTS", 5000, "Events between published model versions.", group="segments")
    hysteresis: float = _opt("SEGSTREAM_HYSTERESIS", 0.05, "A user moves only to a segment closer by this relative margin.", group="segments")
    seed: int = _opt("SEGSTREAM_SEED", 0, "Seed of every random choice (replays are deterministic).", group="segments")

    # --- checkpoints, recovery, duplicates, privacy -------------
    checkpoint_dir: str = _opt("SEGSTREAM_CHECKPOINT_DIR", "", "Directory of state snapshots tied to offsets (empty: no snapshots; state is rebuilt only from what is consumed after the committed offset).", group="recovery")
    changelog: bool = _opt("SEGSTREAM_CHANGELOG", True, "Keep every partition's state in a compacted Kafka changelog topic (docs/recovery.md#kafka-as-the-store-of-record) and restore from it on assignment, with nothing local. false: no changelog (state only from local snapshots, if any; for comparisons).", group="recovery")
    changelog_topic: str = _opt("SEGSTREAM_CHANGELOG_TOPIC", "", "The state changelog topic (empty: <group_id>.<input_topic>.changelog); as many partitions as the input topic.", group="recovery")
    checkpoint_interval_ms: int = _opt("SEGSTREAM_CHECKPOINT_INTERVAL_MS", 0, "Checkpoint (confirm outputs, snapshot state, commit offsets) at most this often; 0: no lower bound (the share below decides). Snapshots cost time in proportion to users held.", group="recovery")
    checkpoint_share: float = _opt("SEGSTREAM_CHECKPOINT_SHARE", 0.1, "While records are waiting (full micro-batches), the most of the run loop's time checkpoints may take: after a checkpoint that took d seconds the next one waits d*(1-share)/share (at most SEGSTREAM_CHECKPOINT_MAX_GAP_MS), so a loop with a backlog writes each changed user once for many batches. A loop that keeps up checkpoints after every micro-batch. 1: always after every micro-batch.", group="recovery")
    checkpoint_max_gap_ms: int = _opt("SEGSTREAM_CHECKPOINT_MAX_GAP_MS", 5000, "The longest the share rule may hold a checkpoint back (with the changelog, outputs wait for their checkpoint: this bounds their extra latency under a backlog, and the input a crash makes the next owner process again). A loop that keeps up is not held back.", group="recovery")
    commit_interval_ms: int = _opt("SEGSTREAM_COMMIT_INTERVAL_MS", 1000, "With the state changelog: commit the input offsets at most this often (0: at every checkpoint). A restore resumes at the offsets its partition's last checkpoint marker carries, so the committed offsets are only the group's lag and the start of a partition with no marker; committing them less often keeps a round trip per checkpoint off the run loop. Without the changelog every checkpoint commits.", group="recovery")
    aligned_batches: bool = _opt("SEGSTREAM_ALIGNED_BATCHES", False, "Cut micro-batches per partition at offset multiples of the batch size, so that a replay after a crash sees the very same batches (bit-exact recovery).", group="recovery")
    dedup_window: int = _opt("SEGSTREAM_DEDUP_WINDOW", 0, "Drop an event whose event_id is among the last N ids seen (0: off).", group="recovery")
    pseudonymise_key: str = _opt("SEGSTREAM_PSEUDONYMISE_KEY", "", "Replace user ids and event ids by HMAC-SHA-256(key, id) before they are stored or published (empty: off; docs/privacy.md).", group="recovery")

    # --- clusterers, segment identity, lineage and profiles -------
    clusterer: str = _opt("SEGSTREAM_CLUSTERER", "kmeans", "Online clusterer: kmeans (river KMeans, k-means++ warm-up, dead-cluster re-seeding) or dbstream (river DBSTREAM, reclustered every SEGSTREAM_MODEL_UPDATE_EVENTS events).", group="segments", choices=("kmeans", "dbstream"))
    dbstream_radius: float = _opt("SEGSTREAM_DBSTREAM_RADIUS", 0.3, "DBSTREAM micro-cluster radius (clustering_threshold), in embedding units.", group="segments")
    dbstream_fading: float = _opt("SEGSTREAM_DBSTREAM_FADING", 0.01, "DBSTREAM fading factor per learned point (weights halve every ~1/fading learned points).", group="segments")
    dbstream_intersection: float = _opt("SEGSTREAM_DBSTREAM_INTERSECTION", 0.3, "DBSTREAM intersection factor: two micro-clusters connect when their shared density reaches this share of their mean weight (lower: fewer splits of one group, more risk of joining two).", group="segments")
    match_factor: float = _opt("SEGSTREAM_MATCH_FACTOR", 2.0, "DBSTREAM: a new centre keeps an old id only within this many radii of it (besides the bound every clusterer uses: half the old centre's distance to its nearest neighbour).", group="segments")
    dbstream_min_share: float = _opt("SEGSTREAM_DBSTREAM_MIN_SHARE", 0.03, "DBSTREAM: a macro-cluster becomes a new segment at this share of the total macro-cluster weight; a published segment stays one down to half of it.", group="segments")
    reassign_per_batch: int = _opt("SEGSTREAM_REASSIGN_PER_BATCH", 2000, "Users re-assigned per micro-batch after a new model version (ended segments first, then labels the model may have changed), besides the batch's own users.", group="segments")
    dwell_s: float = _opt("SEGSTREAM_DWELL_S", 0.0, "A user who changed segment keeps the new one for at least this much event time, in seconds (0: hysteresis margin only).", group="segments")
    lineage_topic: str = _opt("SEGSTREAM_LINEAGE_TOPIC", "segment-lineage", "Topic of segment lineage events (born/retired/merged/split, schema 1).", group="kafka")
    profiles_topic: str = _opt("SEGSTREAM_PROFILES_TOPIC", "segment-profiles", "Topic of periodic segment profiles (keyed by segment id, schema 2).", group="kafka")
    profile_every_events: int = _opt("SEGSTREAM_PROFILE_EVERY_EVENTS", 50000, "Events between published segment profiles (0: never).", group="segments")

    # --- one segment model for several instances -----------------
    global_model: bool = _opt("SEGSTREAM_GLOBAL_MODEL", False, "Share one segment model across the instances of the group through the model topic (kmeans: weighted k-means over the members' centres; dbstream: DBSTREAM's macro-clusters of the members' micro-clusters). Off: each instance learns its own model (one instance per group).", group="scale-out")
    model_topic: str = _opt("SEGSTREAM_MODEL_TOPIC", "segment-model", "Single-partition topic of model summaries and announced global models (schema segstream.model/1; compacted when created here).", group="scale-out")
    model_first_wait_ms: int = _opt("SEGSTREAM_MODEL_FIRST_WAIT_MS", 10000, "Global model: how long the leader waits, once it has k summary points (dbstream: one), for summaries that cover every input partition before it proposes version 1 from those it has.", group="scale-out")
    model_merge_wait_ms: int = _opt("SEGSTREAM_MODEL_MERGE_WAIT_MS", 1000, "Global model: the leader merges once per round of summaries (its own, or one from every member); a summary that has waited this long for the rest of its round is merged without it.", group="scale-out")
    model_silent_after_s: float = _opt("SEGSTREAM_MODEL_SILENT_AFTER_S", 300.0, "Global model: a member whose latest summary is older than this is left out of merges (members re-send theirs every third of it; segstream_model_member_silent_seconds shows the age).", group="scale-out")
    instance_id: str = _opt("SEGSTREAM_INSTANCE_ID", "", "Name of this instance in the model protocol (empty: host-pid-random).", group="scale-out")

    # --- metrics and logs --------------------------------------------------
    metrics_port: int = _opt("SEGSTREAM_METRICS_PORT", 9400, "Port of the HTTP endpoint: /metrics (Prometheus), /healthz and /readyz (probes); 0: none.", group="ops")
    metrics_host: str = _opt("SEGSTREAM_METRICS_HOST", "127.0.0.1", "Address the HTTP endpoint binds to (0.0.0.0: every interface, e.g. in a container).", group="ops")
    metrics_auth_user: str = _opt("SEGSTREAM_METRICS_AUTH_USER", "", "User name of HTTP basic auth on /metrics (empty: no auth). /healthz and /readyz stay open for probes.", group="ops")
    metrics_auth_password: str = _opt("SEGSTREAM_METRICS_AUTH_PASSWORD", "", "Password of HTTP basic auth on /metrics (set it in the environment, not on the command line, where ps shows it).", group="ops")
    metrics_tls_certfile: str = _opt("SEGSTREAM_METRICS_TLS_CERTFILE", "", "PEM certificate (chain) to serve /metrics, /healthz and /readyz over HTTPS (empty: plain HTTP).", group="ops")
    metrics_tls_keyfile: str = _opt("SEGSTREAM_METRICS_TLS_KEYFILE", "", "PEM private key of SEGSTREAM_METRICS_TLS_CERTFILE.", group="ops")
    liveness_timeout_s: float = _opt("SEGSTREAM_LIVENESS_TIMEOUT_S", 300.0, "/healthz fails once the run loop has not turned for this long (a loop turn is one poll and the batch it returns; a restore runs inside one turn).", group="ops")
    lag_probe_interval_s: float = _opt("SEGSTREAM_LAG_PROBE_INTERVAL_S", 5.0, "Seconds between broker lag probes: a side thread with its own consumer reads the group's committed offsets and the log end of each owned partition (0: no probe, no lag metrics).", group="ops")
    log_format: str = _opt("SEGSTREAM_LOG_FORMAT", "text", "text or json.", group="ops", choices=("text", "json"))
    log_level: str = _opt("SEGSTREAM_LOG_LEVEL", "INFO", "Python logging level.", group="ops")

    # --- drift detection -----------------------------------------
    drift_grace_batches: int = _opt("SEGSTREAM_DRIFT_GRACE_BATCHES", 20, "Batches after seeding before the drift detector is tested and the PSI reference starts.", group="ops")
    drift_delta: float = _opt("SEGSTREAM_DRIFT_DELTA", 0.05, "Drift CUSUM tolerance: rises of the fit ratio (distance to the nearest centroid over the model version's baseline) under this share are ignored.", group="ops")
    drift_threshold: float = _opt("SEGSTREAM_DRIFT_THRESHOLD", 0.1, "Drift CUSUM alarm threshold: the fit ratio's rise beyond 1 + delta, summed over embeddings, in thousands (0.1: a 15% rise over 1,000 embeddings).", group="ops")
    drift_baseline_embeddings: int = _opt("SEGSTREAM_DRIFT_BASELINE_EMBEDDINGS", 1000, "Embeddings, from the batch that brings a model version on, whose mean distance to its nearest centroid is that version's drift baseline.", group="ops")
    drift_hold_batches: int = _opt("SEGSTREAM_DRIFT_HOLD_BATCHES", 20, "Batches the drift-alarm gauge stays up after a detection.", group="ops")
    psi_window: int = _opt("SEGSTREAM_PSI_WINDOW", 2000, "Embeddings in the PSI reference and current windows.", group="ops")
    psi_refresh_embeddings: int = _opt("SEGSTREAM_PSI_REFRESH_EMBEDDINGS", 500_000, "The PSI reference is replaced by the current window after this many embeddings, so PSI measures change since the last refresh, not since start-up (0: the first window stays the reference). Checkpointed with the state.", group="ops")

    # ------------------------------------------------------------------
    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value not in choices:
                raise SettingsError(f"{f.metadata['env']}={value!r}: expected one of {', '.join(choices)}")
        if self.checkpoint_interval_ms < 0 or self.dedup_window < 0 or self.commit_interval_ms < 0:
            raise SettingsError(f"{_env('checkpoint_interval_ms')}, {_env('commit_interval_ms')} and "
                                f"{_env('dedup_window')} must be >= 0")
        if not 0.0 < self.checkpoint_share <= 1.0 or self.checkpoint_max_gap_ms < 0:
            raise SettingsError(f"{_env('checkpoint_share')} must be in (0, 1] and {_env('checkpoint_max_gap_ms')} >= 0")
        if self.gc_threshold < 0:
            raise SettingsError(f"{_env('gc_threshold')} must be >= 0")
        positive = ("batch_max_events", "max_event_bytes", "max_users", "encoder_batch", "segments", "warmup_users", "model_update_events",
                    "reassign_per_batch", "drift_baseline_embeddings")
        for name in positive:
            if getattr(self, name) <= 0:
                raise SettingsError(f"{_env(name)} must be > 0")
        if self.model_first_wait_ms < 0 or self.model_silent_after_s <= 0 or self.model_merge_wait_ms < 0:
            raise SettingsError(f"{_env('model_first_wait_ms')} and {_env('model_merge_wait_ms')} must be >= 0, "
                                f"{_env('model_silent_after_s')} > 0")
        if self.warmup_users < self.segments:
            raise SettingsError(f"{_env('warmup_users')} must be >= {_env('segments')}")
        if not 0.0 < self.dbstream_intersection <= 1.0:
            raise SettingsError(f"{_env('dbstream_intersection')} must be in (0, 1]")
        if not 0.0 <= self.hysteresis < 1.0:
            raise SettingsError(f"{_env('hysteresis')} must be in [0, 1)")
        if bool(self.metrics_auth_user) != bool(self.metrics_auth_password):
            raise SettingsError(f"{_env('metrics_auth_user')} and {_env('metrics_auth_password')} go together")
        if bool(self.metrics_tls_certfile) != bool(self.metrics_tls_keyfile):
            raise SettingsError(f"{_env('metrics_tls_certfile')} and {_env('metrics_tls_keyfile')} go together")
        if self.liveness_timeout_s <= 0 or self.lag_probe_interval_s < 0 or self.psi_refresh_embeddings < 0:
            raise SettingsError(f"{_env('liveness_timeout_s')} must be > 0, {_env('lag_probe_interval_s')} and "
                                f"{_env('psi_refresh_embeddings')} >= 0")
        if self.sasl_mechanism in _LIBRDKAFKA_ONLY and self.kafka_client != "confluent":
            raise SettingsError(f"{_env('sasl_mechanism')}={self.sasl_mechanism} needs {_env('kafka_client')}=confluent "
                                "(kafka-python is used here with PLAIN and SCRAM only)")
        if self.sasl_mechanism == "OAUTHBEARER" and not self.sasl_oauthbearer_token_url:
            raise SettingsError(f"{_env('sasl_mechanism')}=OAUTHBEARER needs {_env('sasl_oauthbearer_token_url')}")
        if not 0.0 < self.learning_rate <= 1.0:
            raise SettingsError(f"{_env('learning_rate')} must be in (0, 1]")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from environment variables, then explicit overrides."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            env = f.metadata["env"]
            if env in environ:
                values[f.name] = parse_value(_field_type(f), environ[env], env)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @property
    def changelog_name(self) -> str:
        """The state changelog topic: the setting, or one derived from the group and the input topic."""
        return self.changelog_topic or f"{self.group_id}.{self.input_topic}.changelog"

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def kafka_security(self) -> dict[str, Any]:
        """Security options passed through to every kafka-python client (librdkafka's: stream/kafka/security.py)."""
        if self.sasl_mechanism in _LIBRDKAFKA_ONLY and self.security_protocol.startswith("SASL"):
            raise SettingsError(f"{_env('sasl_mechanism')}={self.sasl_mechanism} is not available to kafka-python clients")
        opts: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.security_protocol.startswith("SASL"):
            opts.update(sasl_mechanism=self.sasl_mechanism or "PLAIN",
                        sasl_plain_username=self.sasl_username or None,
                        sasl_plain_password=self.sasl_password or None)
        if self.security_protocol.endswith("SSL"):
            opts.update(ssl_check_hostname=True)
            for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
                if getattr(self, key):
                    opts[key] = getattr(self, key)
        return opts


_LIBRDKAFKA_ONLY = ("OAUTHBEARER", "GSSAPI")


def setting_fields() -> list[dataclasses.Field]:
    return list(dataclasses.fields(Settings))


def _env(name: str) -> str:
    return Settings.__dataclass_fields__[name].metadata["env"]


def _field_type(f: dataclasses.Field) -> type:
    hints = typing.get_type_hints(Settings)
    tp = hints[f.name]
    if isinstance(tp, types.UnionType):  # pragma: no cover - no optional fields today
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    return tp


def parse_value(tp: type, raw: str, name: str) -> Any:
    try:
        if tp is bool:
            low = raw.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
        if tp is int:
            return int(raw.replace("_", ""))
        if tp is float:
            return float(raw)
        return raw
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected {tp.__name__}") from None


def markdown_table() -> str:
    """The configuration table docs/configuration.md shows (kept in sync by tests/test_docs.py)."""
    rows = ["| Flag | Environment variable | Default | Meaning |", "|---|---|---|---|"]
    for f in setting_fields():
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        shown = f"`{default}`" if default != "" else "(empty)"
        rows.append(f"| `{flag}` | `{f.metadata['env']}` | {shown} | {f.metadata['help']} |")
    return "\n".join(rows)
