"""The ``segstream`` command line: ``main_parser()`` builds it, ``run_cli(argv)`` runs it.

Every consumer setting is a flag of ``run`` (and of ``demo``/``replay``) and an
environment variable; flags win over the environment, which wins over the
defaults. ``segstream config --markdown`` prints the table docs/configuration.md shows.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence

from stream.settings import Settings, SettingsError, markdown_table, parse_value, setting_fields

__all__ = ["main_parser", "run_cli", "main"]

log = logging.getLogger("segstream")


def _add_settings(parser: argparse.ArgumentParser) -> None:
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in setting_fields():
        g = f.metadata["group"]
        if g not in groups:
            groups[g] = parser.add_argument_group(f"{g} settings")
        tp = f.type if isinstance(f.type, type) else {"int": int, "float": float, "str": str, "bool": bool}[str(f.type)]
        flag = "--" + f.name.replace("_", "-")
        # argparse %-formats help strings: a literal "%" in a setting's text must be doubled.
        help_ = f"{f.metadata['help']} [env {f.metadata['env']}, default {f.default!r}]".replace("%", "%%")
        kwargs = dict(dest=f"setting_{f.name}", default=None, help=help_)
        if f.metadata.get("choices"):
            kwargs["choices"] = f.metadata["choices"]
        groups[g].add_argument(flag, type=lambda raw, tp=tp, env=f.metadata["env"]: parse_value(tp, raw, env), **kwargs)


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {k[len("setting_"):]: v for k, v in vars(args).items() if k.startswith("setting_") and v is not None}
    return Settings.from_env(os.environ, **overrides)


def main_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="segstream", description="Real-time user segmentation for recommender systems.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="consume behaviour events and publish segment changes")
    run.add_argument("--max-events", type=int, default=None, help="stop after this many records")
    run.add_argument("--idle-exit", type=float, default=None, metavar="SECONDS", help="stop after this long without records")
    _add_settings(run)

    demo = sub.add_parser("demo", help="embedded broker + generated log + live segments, nothing to set up")
    demo.add_argument("--workdir", default="runs/demo")
    demo.add_argument("--users", type=int, default=3000)
    demo.add_argument("--groups", type=int, default=8)
    demo.add_argument("--events", type=int, default=120_000)
    demo.add_argument("--partitions", type=int, default=3)
    demo.add_argument("--follow", action="store_true", help="keep consuming after the log is done (Ctrl-C stops)")
    _add_settings(demo)

    train = sub.add_parser("train-encoder", help="train an encoder artifact from a recorded log")
    train.add_argument("--log", required=True, help="recorded event log (.msgpack or .jsonl)")
    train.add_argument("--out", required=True, help="artifact path to write")
    train.add_argument("--kind", default=None, help="item-seq (the default: item embeddings learned from the next items "
                       "of each user's sequence, pooled over the recent items), item-pool (next-item embeddings pooled "
                       "with time decay), item-gru (a GRU over the recent items in time order, with their gaps; trained like item-seq) "
                       "or state-ae (autoencoder over the state vector)")
    for flag, tp, help_ in (("--dim", int, "embedding width"), ("--hidden", int, "state-ae hidden width"),
                            ("--epochs", int, None), ("--lr", float, "Adam learning rate"),
                            ("--half-life-s", float, "event-time half-life of the state"),
                            ("--category-buckets", int, None), ("--item-history", int, "recent items kept per user"),
                            ("--max-samples", int, "training examples kept (seeded reservoir)"),
                            ("--min-item-count", int, "item kinds: occurrences for an item to get an embedding"),
                            ("--window", int, "item-seq, item-gru: the context predicts the items of the next WINDOW events"),
                            ("--attention", str, "item-seq: uniform, salience or salience+recency"),
                            ("--table", str, "item-seq: the item vectors pooled: next-window (learned), co-occurrence "
                             "(SVD of the log's user x item matrix) or both"),
                            ("--readout", str, "item-gru: mean (the GRU's outputs averaged over the recent items) or last "
                             "(its last state)")):
        train.add_argument(flag, type=tp, default=None, help=f"{help_ + ' ' if help_ else ''}(default: the kind's)")
    train.add_argument("--seed", type=int, default=0)

    ml = sub.add_parser("import-movielens", help="convert a MovieLens directory into a recorded log")
    ml.add_argument("directory")
    ml.add_argument("--out", required=True)

    gen = sub.add_parser("generate", help="write a synthetic log with planted user groups (and optional drift)")
    gen.add_argument("--out", required=True)
    gen.add_argument("--users", type=int, default=2000)
    gen.add_argument("--groups", type=int, default=4)
    gen.add_argument("--events", type=int, default=40_000)
    gen.add_argument("--days", type=float, default=14.0)
    gen.add_argument("--drift-at", type=float, default=None, help="fraction of the time span where groups drift")
    gen.add_argument("--drift-groups", type=int, default=0)
    gen.add_argument("--seed", type=int, default=0)

    prod = sub.add_parser("produce", help="write a recorded log into a topic")
    prod.add_argument("--log", required=True)
    prod.add_argument("--topic", default=None, help="default: the input topic")
    prod.add_argument("--rate", type=float, default=None, help="events per second (default: as fast as possible)")
    prod.add_argument("--partitions", type=int, default=None, help="create the topic with this many partitions if missing")
    _add_settings(prod)

    rep = sub.add_parser("replay", help="run a recorded log through the pipeline without a broker")
    rep.add_argument("--log", required=True)
    rep.add_argument("--out", default=None, help="write segment events here (msgpack [key, value] pairs)")
    rep.add_argument("--clock", choices=("wall", "event"), default="event",
                     help="emitted_at from the wall clock or from event time (deterministic)")
    _add_settings(rep)

    ev = sub.add_parser("evaluate", help="offline evaluation harnesses (JSON figures + PNG plots)")
    from evaluation import register_commands

    register_commands(ev)

    look = sub.add_parser("lookup", help="print a user's current segment, read from the output topic (JSON)")
    look.add_argument("user_id", metavar="USER_ID", help="the user id (pseudonymised first when a key is set)")
    look.add_argument("--follow", action="store_true",
                      help="then keep reading: one line per change of the user's segment (Ctrl-C stops)")
    look.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                      help="longest wait for the broker, and for the read to the topic's end")
    _add_settings(look)

    brk = sub.add_parser("broker", help="run the embedded Kafka-protocol broker in the foreground")
    brk.add_argument("--port", type=int, default=9092)

    cfg = sub.add_parser("config", help="print the effective settings (or the docs/configuration.md table)")
    cfg.add_argument("--markdown", action="store_true")
    _add_settings(cfg)
    return p


def _install_stop_handlers(stop: threading.Event) -> None:
    def handler(signum: int, _frame: object) -> None:
        log.info("received %s: finishing the current batch", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def run_cli(argv: Sequence[str] | None = None) -> int:
    args = main_parser().parse_args(argv)
    try:
        settings = _settings(args) if any(k.startswith("setting_") for k in vars(args)) else Settings.from_env()
    except SettingsError as exc:
        print(f"segstream: {exc}", file=sys.stderr)
        return 2
    from stream.observability.logs import configure_logging

    configure_logging(settings.log_format, settings.log_level)
    try:
        return _dispatch(args, settings)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from encoders.artifact import ArtifactError
        from stream.kafka.clients import BrokerConnectionError, PublishError

        if isinstance(exc, (ArtifactError, PublishError, BrokerConnectionError, FileNotFoundError, TimeoutError,
                            ValueError)):
            log.error("%s", exc)
            return 1
        raise


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    cmd = args.command
    if cmd == "config":
        if args.markdown:
            print(markdown_table())
        else:
            print(json.dumps({f.name: getattr(settings, f.name) for f in setting_fields()
                              if "password" not in f.name and not f.name.endswith("_key")}, indent=2))
        return 0
    if cmd == "run":
        from stream.runtime.app import run_consumer

        stop = threading.Event()
        _install_stop_handlers(stop)
        summary = run_consumer(settings, stop=stop, max_events=args.max_events, idle_exit_s=args.idle_exit)
        print(json.dumps(summary.as_dict()), flush=True)
        return 0
    if cmd == "demo":
        from stream.cli.demo import run_demo

        return run_demo(settings, workdir=args.workdir, users=args.users, groups=args.groups, events=args.events,
                        partitions=args.partitions, follow=args.follow)
    if cmd == "train-encoder":
        from encoders.train import DEFAULT_KIND, TrainConfig, train_encoder

        names = ("dim", "hidden", "epochs", "lr", "half_life_s", "category_buckets", "item_history", "max_samples",
                 "min_item_count", "window", "attention", "table", "readout", "seed")
        cfg = TrainConfig.for_kind(args.kind or DEFAULT_KIND,
                                   **{n: getattr(args, n) for n in names if getattr(args, n) is not None})
        train_encoder(args.log, args.out, cfg, progress=lambda m: print(m, flush=True))
        return 0
    if cmd == "import-movielens":
        from eventlogs.movielens import import_movielens

        n = import_movielens(args.directory, args.out)
        print(f"wrote {n:,} events to {args.out}")
        return 0
    if cmd == "generate":
        from eventlogs.recorded import write_events
        from eventlogs.synthetic import SyntheticConfig, generate

        cfg = SyntheticConfig(users=args.users, groups=args.groups, events=args.events, duration_s=args.days * 86400,
                              drift_at=args.drift_at, drift_groups=args.drift_groups, seed=args.seed)
        n = write_events(args.out, generate(cfg))
        print(f"wrote {n:,} events to {args.out}")
        return 0
    if cmd == "produce":
        from stream.kafka.clients import ensure_topics, wait_for_broker
        from stream.cli.producer import produce_log

        wait_for_broker(settings)
        topic = args.topic or settings.input_topic
        if args.partitions:
            ensure_topics(settings, {topic: args.partitions})
        n = produce_log(settings, args.log, topic, rate=args.rate, progress=print)
        print(f"produced {n:,} events to {topic}")
        return 0
    if cmd == "replay":
        from stream.runtime.replay import replay_log

        print(json.dumps(replay_log(settings, args.log, args.out, clock=args.clock).as_dict()))
        return 0
    if cmd == "evaluate":
        return int(args.evaluation_main(args))
    if cmd == "lookup":
        from stream.cli.lookup import run_lookup

        stop = threading.Event()
        if args.follow:
            _install_stop_handlers(stop)
        return run_lookup(settings, args.user_id, follow=args.follow, timeout_s=args.timeout, stop=stop)
    if cmd == "broker":
        from stream.kafka.embedded_broker import EmbeddedBroker

        stop = threading.Event()
        _install_stop_handlers(stop)
        with EmbeddedBroker(args.port) as broker:
            print(f"embedded broker listening on {broker.bootstrap} (Ctrl-C stops)", flush=True)
            stop.wait()
        return 0
    raise AssertionError(cmd)


def main() -> None:
    sys.exit(run_cli())


if __name__ == "__main__":
    main()
