"""Encoder throughput: user states embedded per second, batch 1024, per encoder kind (CPU; CUDA when present).

One torch thread by default (``torch.set_num_threads(1)``: one CPU core, the consumer's default). The
default kind (``encoders.train.DEFAULT_KIND``) must keep >= 500,000 states/s there; ``goal_met`` says
whether it did on this run.

    python -m bench.encoder_throughput [--seconds 3] [--threads 1] [--out docs/bench/encoders.jsonl]

Artifacts are trained briefly on a cached synthetic log (training quality does
not change inference cost); the inputs are 1024 real user states replayed from
that log. Each figure is the median of 5 timed rounds of ``Encoder.encode``
(numpy in, numpy out: the cost the consumer pays per micro-batch). The state
autoencoder is also timed with torch's dynamic int8 quantisation, with the
largest embedding difference it causes, to decide whether to offer it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.common import CACHE, emit, note, synthetic_log
from bench.output import append_result, command_line


GOAL = 500_000  # states/s of the default kind, one CPU core, batch 1024


def _artifact(log, kind: str):
    from encoders.train import TrainConfig, train_encoder

    cfg = TrainConfig.for_kind(kind, epochs=2, max_samples=20_000)
    digest = hashlib.sha256(json.dumps(asdict(cfg), sort_keys=True).encode()).hexdigest()[:8]
    path = CACHE / f"{log.stem}-{kind}-{digest}-throughput.pt"  # retrained when the kind's defaults change
    if not path.exists():
        note(f"training {path.name}")
        train_encoder(log, path, cfg, progress=lambda m: None)
    return path


def _rate(fn, n: int, seconds: float) -> float:
    fn()  # warm-up
    rounds = []
    for _ in range(5):
        t = time.perf_counter()
        reps = 0
        while True:
            fn()
            reps += 1
            if time.perf_counter() - t >= seconds / 5:
                break
        rounds.append(reps * n / (time.perf_counter() - t))
    return statistics.median(rounds)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from encoders.serving import load_encoder
    from encoders.train import DEFAULT_KIND, replay_features

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=3.0, help="timed seconds per figure")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (the consumer's default is 1)")
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--out", default="", help="also write the result, with its command, to this JSON-lines file (replaced)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    log = synthetic_log(users=20_000, events=200_000)
    figures: dict[str, Any] = {}
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for kind in ("state-ae", "item-pool", "item-seq", "item-gru"):
        path = _artifact(log, kind)
        enc = load_encoder(path, device="cpu", max_batch=args.batch)
        f = replay_features(log, enc.spec, max_samples=args.batch, batch_events=500)
        row: dict[str, Any] = {"dim": enc.dim, "item_history": enc.spec.item_history}
        if kind == "item-seq":
            row["attention"] = enc.module.attention_kind
        if kind == "item-gru":
            row["readout"] = enc.module.readout
        for dev in devices:
            e = load_encoder(path, device=dev, max_batch=args.batch)
            if dev == "cuda":
                e.encode(f)
                torch.cuda.synchronize()
            row[f"{dev}_states_per_s"] = round(_rate(lambda e=e: e.encode(f), len(f), args.seconds))
            note(f"{kind} on {dev}: {row[f'{dev}_states_per_s']:,} states/s")
        if kind == "state-ae":
            q = load_encoder(path, device="cpu", max_batch=args.batch)
            ref = q.encode(f)
            q.module = torch.ao.quantization.quantize_dynamic(q.module, {torch.nn.Linear}, dtype=torch.qint8)
            row["cpu_int8_states_per_s"] = round(_rate(lambda: q.encode(f), len(f), args.seconds))
            row["int8_max_abs_diff"] = float(np.abs(q.encode(f) - ref).max())
            note(f"{kind} int8 on cpu: {row['cpu_int8_states_per_s']:,} states/s")
        if kind == "item-seq":
            # what the learned attention would cost (not the default; see docs/encoders.md)
            a = load_encoder(path, device="cpu", max_batch=args.batch)
            a.module.attention_kind = "salience+recency"
            row["cpu_salience_recency_states_per_s"] = round(_rate(lambda: a.encode(f), len(f), args.seconds))
            note(f"{kind}: salience+recency {row['cpu_salience_recency_states_per_s']:,} states/s")
        figures[kind] = row
    figures["default_kind"] = DEFAULT_KIND
    figures["goal_states_per_s"] = GOAL
    figures["goal_met"] = figures[DEFAULT_KIND]["cpu_states_per_s"] >= GOAL if args.threads == 1 else None
    result = emit("encoder_throughput", figures, batch=args.batch, threads=args.threads, seconds=args.seconds,
                  devices=devices, log=log.name)
    if args.out:
        Path(args.out).unlink(missing_ok=True)
        append_result(args.out, result, command_line("bench.encoder_throughput", argv))
    return result


if __name__ == "__main__":
    main()
