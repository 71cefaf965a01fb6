"""Markdown figure tables from committed benchmark JSON, and the docs blocks that hold them.

    python -m bench.report runs/bench/suite-<time>.jsonl      # print the machine line and the suite table
    python -m bench.report --update docs/performance.md docs/scaling.md   # re-render every block in place
    python -m bench.report --check docs/performance.md docs/scaling.md    # exit 1 if a block is stale

A doc holds a rendered table between two HTML comments::

    <!-- bench:KIND FILE[,FILE...] -->
    ...the output of render(KIND, FILES)...
    <!-- /bench -->

FILE is a JSON-lines file written by a bench script (``python -m bench.suite --out
docs/bench/suite.jsonl``, ``python -m bench.scaleout --out docs/bench/scaleout.jsonl``,
``python -m bench.encoder_throughput --out docs/bench/encoders.jsonl``), relative to the
repository root. ``tests/test_docs.py`` checks that every block equals the rendering of
its files, so a table cannot drift from the JSON behind it and a figure cannot be
edited by hand. Rows that are estimates (``sizing``, ``plan``) are computed here from
measured figures, and say so.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any, Callable

from bench.report_evaluation import movielens_table, planted_table, selection_table
from bench.tables import Results, cmd as _cmd, load, of as _of, one as _one, table as _table
from state.global_model import SUMMARY_FACTOR

BLOCK = re.compile(r"<!-- bench:([a-z-]+) (\S+) -->\n(.*?)<!-- /bench -->", re.S)

# --- the suite ------------------------------------------------------------------------------------


def machine_line(results: Results) -> str:
    """One sentence: the machine and the load average seen as each run started (no dates)."""
    m = results[0]["machine"]
    loads = [r["machine"]["loadavg_at_start"][0] for r in results if "machine" in r]
    lo, hi = min(loads), max(loads)
    load = f"{lo}" if lo == hi else f"{lo}–{hi}"
    return (f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Python {m['python']}, "
            f"torch {m['versions']['torch']}, river {m['versions']['river']}, "
            f"kafka-python {m['versions']['kafka-python']}; load average (1 min) as each run started: {load}.")


def suite_rows(results: Results) -> list[tuple[str, str, str, str]]:
    rows = []
    for r in results:
        f, p, cmd = r.get("figures", {}), r.get("params", {}), _cmd(r)
        if r.get("bench") == "throughput":
            size = f"k={p['segments']}, {p['users']:,} users, {p['events']:,} events, {p['dim']} dims"
            if "file" in f:
                rows.append(("log file → pipeline (no broker)", size,
                             f"{f['file']['events_per_s']:,} events/s ({f['file']['segment_changes']:,} segment events)",
                             cmd))
            if "naive" in f:
                rows.append(("naive per-event reference", size + f", first {f['naive']['events']:,} events",
                             f"{f['naive']['events_per_s']:,} events/s (pipeline: {f.get('file_over_naive', '?')}×)", cmd))
            if "broker" in f:
                b = f["broker"]
                if "raw_consume_python_gc" in b:
                    rows.append(("embedded broker: raw kafka-python consume, Python's default gc", size,
                                 f"{b['raw_consume_python_gc']['events_per_s']:,} events/s", cmd))
                rows.append(("embedded broker: raw kafka-python consume" +
                             (", segstream's gc threshold" if "raw_consume_python_gc" in b else ""), size,
                             f"{b['raw_consume']['events_per_s']:,} events/s", cmd))
                if "raw_consume_columnar" in b:
                    rows.append(("embedded broker: same consumer, segstream's columnar decoder, no processing", size,
                                 f"{b['raw_consume_columnar']['events_per_s']:,} events/s", cmd))
                rows.append(("embedded broker: `segstream run` loop", size,
                             f"{b['pipeline']['events_per_s']:,} events/s (ratio {b['ratio']}"
                             + (f", {b['ratio_to_python_gc']} to the default-gc consume" if "ratio_to_python_gc" in b else "")
                             + "; "
                             f"{b['pipeline']['segment_changes']:,} segment events published)", cmd))
        elif r.get("bench") == "produce":
            for name, label in (("send_per_record", "kafka-python `send` per record"),
                                ("record_batches", "whole record batches (`stream/kafka/batch_produce.py`)")):
                g = f[name]
                rows.append((f"publish + confirm segment events: {label}",
                             f"{g['records']:,} events, {p['batch']:,} per confirm, {p['partitions']} partitions",
                             f"{g['records_per_s']:,} records/s ({g['us_per_record']} µs each)", cmd))
        elif r.get("bench") == "latency":
            lat = f["latency_ms"]
            rows.append(("event-to-publish latency", f"{f['offered_events_per_s']:,} events/s offered, "
                         f"batch wait ≤ {p['batch_max_wait_ms']} ms, {p['seconds']:.0f} s",
                         f"p50 {lat['p50']} ms, p99 {lat['p99']} ms, max {lat['max']} ms", cmd))
        elif r.get("bench") == "memory":
            for size, m in f.items():
                parts = m.get("itemised_bytes_per_user", {})
                more = "".join(f", {label} {parts[k]} B" for k, label in (
                    ("change_id", "change id"), ("label_bounds", "label bounds"), ("ids", "ids"),
                    ("id_index", "id index"), ("key", "row key")) if k in parts)
                rows.append(("resident memory per tracked user", f"{int(size):,} users",
                             f"{m['bytes_per_user']} B (state columns {m['state_columns_bytes_per_user']} B{more})", cmd))
        elif r.get("bench") == "checkpoint":
            rows.append(("checkpoint snapshot write / restore", f"{p['users']:,} users, {p['partitions']} partitions",
                         f"{f['write_seconds']} s / {f['restore_seconds']} s, {f['bytes_per_user']} B/user on disk", cmd))
    return rows


def suite_table(results: Results) -> str:
    return _table(("Measure", "Workload", "Result", "Command"), suite_rows(results))


_GOALS = {
    "file_events_per_s": "log file → pipeline, one process",
    "broker_ratio": "`segstream run` loop / raw kafka-python consume (same process settings)",
    "file_over_naive": "log-file pipeline / naive per-event pipeline",
    "latency_p99_ms": "p99 event-to-publish latency at 5,000 events/s (ms)",
    "memory_bytes_per_user": "resident bytes per tracked user",
}


def goals_table(results: Results) -> str:
    """The suite's goals (``bench.suite._targets``) checked on the committed run."""
    from bench.suite import _targets

    rows = []
    for key, t in _targets(results).items():
        base = next(b for b in _GOALS if key.startswith(b))
        tag = key[len(base):].lstrip("_")
        where = ""
        if tag.startswith("k"):
            k, u = tag[1:].split("_u")
            if k != "8":  # the goals are set for k = 8 (the planted groups); k = 64 is in the figures table
                continue
            where = f" (k = {k}, {int(u):,} users)"
        elif tag:
            where = f" ({int(tag):,} users)"
        op, num = t["goal"].split()
        goal = {">=": "≥", "<=": "≤"}[op] + " " + f"{float(num):,g}".replace("1e+05", "100,000")
        rows.append((_GOALS[base] + where, goal, f"{t['value']:,}", "yes" if t["met"] else "**no**"))
    return _table(("Goal", "Target", "Measured", "Met"), rows)


# --- encoders --------------------------------------------------------------------------------------


def encoders_table(results: Results) -> str:
    r = _one(results, "encoder_throughput")
    f, p = r["figures"], r["params"]
    rows = []
    for kind, row in f.items():
        if not isinstance(row, dict):
            continue
        what = f"`{kind}` ({row['dim']}-d" + (f", {row['item_history']} recent items" if "item_history" in row and kind != "state-ae" else "")
        what += (f", {row['attention']} attention)" if "attention" in row else
                 f", GRU, {row['readout']} readout)" if "readout" in row else ")")
        what += " (default)" if kind == f.get("default_kind") else ""
        for dev in p["devices"]:
            rows.append((what, f"{dev}, batch {p['batch']:,}, {p['threads']} torch thread(s)",
                         f"{row[f'{dev}_states_per_s']:,} states/s", _cmd(r)))
        if "cpu_salience_recency_states_per_s" in row:
            rows.append((f"`{kind}` with salience+recency attention (not offered as default)",
                         f"cpu, batch {p['batch']:,}, {p['threads']} torch thread(s)",
                         f"{row['cpu_salience_recency_states_per_s']:,} states/s", _cmd(r)))
        if "cpu_int8_states_per_s" in row:
            rows.append((what + ", dynamic int8 quantisation", f"cpu, batch {p['batch']:,}",
                         f"{row['cpu_int8_states_per_s']:,} states/s, embeddings off by up to "
                         f"{row['int8_max_abs_diff']:.3g}", _cmd(r)))
    table = _table(("Encoder", "Device", "Result", "Command"), rows)
    if "goal_states_per_s" in f:
        d = f["default_kind"]
        table += (f"\n\nGoal: the default kind (`{d}`) keeps ≥ {f['goal_states_per_s']:,} states/s on one core at batch "
                  f"{p['batch']:,}: {'met' if f['goal_met'] else '**not met**'} ({f[d]['cpu_states_per_s']:,}); load "
                  f"average at start {r['machine']['loadavg_at_start'][0]} on {r['machine']['cores']} cores.")
    return table


def transports_table(results: Results) -> str:
    """``bench.transports``: both Kafka clients on one topic, raw and through ``segstream run``, with the goals.

    Of several runs, the one that started on the quietest machine (lowest load average) is shown."""
    r = min(_of(results, "transports"), key=lambda x: x["machine"]["loadavg_at_start"][0])
    f, m = r["figures"], r["machine"]
    ev = lambda k: f"{f[k]['events_per_s']:,}"  # noqa: E731
    rows = [("raw poll loop, records untouched", ev("kafka_python_raw"), ev("confluent_raw")),
            ("raw poll loop + `msgpack.unpackb` of every value", ev("kafka_python_raw_decode"), ev("confluent_raw_decode")),
            ("`segstream run` loop (defaults)", ev("segstream_kafka_python"), ev("segstream_confluent")),
            ("the same log, no broker (`segstream replay`'s path): the pipeline's ceiling", ev("file"), ev("file"))]
    g = f["goals"]
    rows.append(("goal: `segstream run` / raw poll loop (kafka-python), raw consume+decode (confluent)",
                 f"{g['kafka_python']['value']} ({g['kafka_python']['goal']}: {'met' if g['kafka_python']['met'] else '**not met**'})",
                 f"{g['confluent']['value']} ({g['confluent']['goal']}: {'met' if g['confluent']['met'] else '**not met**'})"))
    rows.append(("`segstream run` / the pipeline's ceiling", str(f["ratios"]["segstream_kafka_python_to_file"]),
                 str(f["ratios"]["segstream_confluent_to_file"])))
    head = (f"Events/s, {r['params']['produced']:,} events ({r['params']['users']:,} users, k = {r['params']['segments']}), "
            f"one partition; kafka-python {m['versions']['kafka-python']}, confluent-kafka "
            f"{m['versions'].get('confluent-kafka')}; load average (1 min) at start {m['loadavg_at_start'][0]} on "
            f"{m['cores']} cores; {_cmd(r)}.\n\n")
    return head + _table(("Mode", "kafka-python", "confluent (librdkafka)"), rows)


def producer_latency_table(results: Results) -> str:
    """``bench.producer_latency``: send-to-subscriber latency per transport and producer ``linger.ms``, and
    where the time goes (p50 / p99 of each stage). Of several runs, the quietest start is shown."""
    r = min(_of(results, "producer-latency"), key=lambda x: x["machine"]["loadavg_at_start"][0])
    p, m = r["params"], r["machine"]
    ms = lambda d, q: f"{d[q]:,.0f}" if q in d else "–"  # noqa: E731
    goal = 150.0
    rows, stage_rows = [], []
    for client, f in r["figures"].items():
        for linger, x in f["by_linger_ms"].items():
            e = x["end_to_end_ms"]
            met = "met" if e.get("p99", float("inf")) <= goal else "**not met**"
            rows.append((client, linger, f"{x['offered_events_per_s']:,}", ms(e, "p50"), ms(e, "p90"), ms(e, "p99"),
                         ms(e, "max"), met))
            st = x["stages_ms"]
            ckpt = x.get("segstream_timers", {}).get("checkpoint_duration", {}).get("mean_ms")
            stage_rows.append((client, linger, *(f"{ms(st[k], 'p50')} / {ms(st[k], 'p99')}" for k in
                                                 ("produce", "fetch", "batch_wait", "processing", "publish", "delivery")),
                               "–" if ckpt is None else f"{ckpt:,.0f}"))
    head = (f"Milliseconds from a confluent-kafka producer's send to a separate subscriber of `user-segments`, "
            f"{p['rate']:,.0f} events/s offered for {p['seconds']:.0f} s per `linger.ms`, one partition, "
            f"`SEGSTREAM_BATCH_MAX_WAIT_MS={p['batch_max_wait_ms']}`, other settings at their defaults; load average "
            f"(1 min) at start {m['loadavg_at_start'][0]} on {m['cores']} cores; {_cmd(r)}.\n\n")
    table = _table(("transport", "linger.ms", "events/s", "p50", "p90", "p99", "max", f"p99 ≤ {goal:.0f} ms"), rows)
    stages = _table(("transport", "linger.ms", "produce", "fetch", "batch wait", "processing", "publish", "delivery",
                     "checkpoint, mean"), stage_rows)
    return (head + table + "\n\nWhere the time goes, p50 / p99 of each stage (ms; stages are separate "
            "distributions and do not add up to the end-to-end percentiles; the last column is segstream's own "
            "`segstream_checkpoint_duration_seconds`, its mean over the phase):\n\n" + stages)


# --- scale-out and sizing --------------------------------------------------------------------------


def fetch_wait_table(results: Results) -> str:
    """`bench.fetch_wait`: how long a caught-up consumer's records wait in the embedded broker, per fetch max wait."""
    r = results[-1]
    rows = [(f"{x['fetch_max_wait_ms']:,}", f"{x['records']}", f"{x['delay_ms']['p50']:.1f}",
             f"{x['delay_ms']['p90']:.1f}", f"{x['delay_ms']['max']:.1f}") for x in r["figures"]["runs"]]
    return _table(("Consumer's fetch max wait (ms)", "Records", "Send to poll, p50 (ms)", "p90", "max"), rows) + \
        f"\n\nOne record every {r['params']['gap_ms']:g} ms to a caught-up kafka-python consumer; command: {_cmd(r)}."


def scaleout_table(results: Results) -> str:
    rows = []
    for r in _of(results, "scaleout"):
        f, p = r["figures"], r["params"]
        cores = "with decode process" if p.get("decode_process") else "no decode process (one core each)"
        model = "global model" if p.get("global_model") else "a model per instance"
        one = f["runs"][0]
        for run in f["runs"]:
            rate, cpu = f"{run['events_per_s']:,} events/s", f"{run['cpu_us_per_event']} CPU-µs/event"
            if run is not one:
                rate += f" ({run['events_per_s'] / one['events_per_s']:.2f}× one)"
                cpu += f" ({run['cpu_us_per_event'] / one['cpu_us_per_event']:.2f}×)"
            rows.append((f"{run['instances']} instance" + ("s" if run["instances"] > 1 else "") + f", {cores}, {model}",
                         f"{p['partitions']} partitions, k = {p['segments']}, {p['users']:,} users, "
                         f"{run['events']:,} events in the window", rate, cpu, _cmd(r)))
    return _table(("Group", "Workload", "Group rate", "CPU per event", "Command"), rows)


def memory_table(results: Results) -> str:
    """Resident bytes per tracked user, part by part (bench.memory's itemisation), one column per size."""
    r = _one(results, "memory")
    sizes = sorted(r["figures"], key=int)
    figs = [r["figures"][n] for n in sizes]
    parts = list(figs[-1].get("itemised_bytes_per_user", {}))
    rows = [(f"`{k}`", *(f"{f['itemised_bytes_per_user'].get(k, '–')} B" for f in figs)) for k in parts]
    if all("unitemised_bytes_per_user" in f for f in figs):
        rows.append(("not itemised (allocator, Python objects)", *(f"{f['unitemised_bytes_per_user']} B" for f in figs)))
    rows.append(("**resident, measured**", *(f"**{f['bytes_per_user']} B**" for f in figs)))
    note = f"\n\nCommand: {_cmd(r)}."
    return _table(("Part", *(f"{int(n):,} users" for n in sizes)), rows) + note


def _basis(results: Results) -> dict[str, Any]:
    """The measured figures the sizing estimates start from."""
    one = next(r for r in _of(results, "scaleout") if not r["params"].get("decode_process"))
    single = one["figures"]["runs"][0]
    mem = _one(results, "memory")
    top = max(mem["figures"], key=int)
    tp = next(r for r in _of(results, "throughput", segments=8) if "file" in r["figures"])
    cl = _one(results, "changelog")
    restore = max(cl["figures"]["restore"], key=lambda f: f["users"])
    return {
        "cl_bytes_per_user": restore["bytes_per_user"], "cl_restore_rate": restore["users_per_s"],
        "cl_write_s": restore["write_seconds"], "cl_users": restore["users"], "changelog": cl,
        "cpu_us": single["cpu_us_per_event"], "core_rate": single["events_per_s"], "scaleout": one,
        "bytes_per_user": mem["figures"][top]["bytes_per_user"], "mem_users": int(top),
        "baseline_bytes": mem["figures"][top]["rss_baseline_bytes"], "memory": mem,
        "changes_per_event": tp["figures"]["file"]["segment_changes"] / tp["figures"]["file"]["events"],
        "throughput": tp, "dim": tp["params"]["dim"], "tp_users": tp["params"]["users"],
    }


def sizing_table(results: Results) -> str:
    """Per instance, per million users held: estimates scaled linearly from the measured figures."""
    b = _basis(results)
    rows = [
        ("memory", f"~{b['bytes_per_user'] * 1e6 / 1e9:.2f} GB of state + ~{b['baseline_bytes'] / 1e9:.2f} GB process baseline",
         f"{b['bytes_per_user']} B/user resident at {b['mem_users']:,} users; baseline RSS with the encoder loaded",
         _cmd(b["memory"])),
        ("CPU", f"~{b['cpu_us']} CPU-µs per event (one core ≈ {b['core_rate']:,} events/s at k = 8)",
         "one instance without its decode process", _cmd(b["scaleout"])),
        ("state changelog in Kafka", f"~{b['cl_bytes_per_user'] * 1e6 / 1e9:.2f} GB of latest values per replica",
         f"{b['cl_bytes_per_user']} B/user (row, kind byte, key) at {b['cl_users']:,} users", _cmd(b["changelog"])),
        ("restore on assignment", f"~{1e6 / b['cl_restore_rate']:.1f} s", f"{b['cl_restore_rate']:,} users/s read and loaded "
         f"from the embedded broker at {b['cl_users']:,} users", _cmd(b["changelog"])),
        ("one full changelog write", f"~{b['cl_write_s'] * 1e6 / b['cl_users']:.1f} s (a checkpoint writes only the users "
         "its interval changed)", f"{b['cl_write_s']} s for {b['cl_users']:,} users", _cmd(b["changelog"])),
    ]
    return _table(("Resource", "Need (estimate)", "Measured basis", "Command"), rows)


PLAN = {"users": 100_000_000, "events_per_s": 1_000_000, "instances": 40, "partitions": 120, "segments": 8,
        "model_update_events": 5000, "failover_share": 1.4}


def plan_table(results: Results) -> str:
    """The 100M-users, 1M-events/s plan: every figure an estimate computed from the measured basis."""
    b, P = _basis(results), PLAN
    per_inst_users = P["users"] / P["instances"]
    per_inst_rate = P["events_per_s"] / P["instances"]
    max_users = P["failover_share"] * per_inst_users
    summary_b = SUMMARY_FACTOR * P["segments"] * b["dim"] * 4 + 150  # 2k local centres per summary
    summaries_per_s = P["events_per_s"] / P["model_update_events"]
    rows = [
        ("pipeline CPU", f"~{P['events_per_s'] * b['cpu_us'] / 1e6:.1f} cores",
         f"{P['events_per_s']:,} events/s × {b['cpu_us']} CPU-µs/event"),
        ("rate per instance", f"{per_inst_rate:,.0f} events/s = {per_inst_rate / b['core_rate']:.0%} of one core's measured rate",
         f"{P['instances']} instances, one core each; {b['core_rate']:,} events/s measured on one core"),
        ("partitions", f"{P['partitions']} ({P['partitions'] // P['instances']} per instance); "
                       f"~{P['events_per_s'] / P['partitions']:,.0f} events/s and ~{P['users'] / P['partitions'] / 1e6:.2f}M users each",
         "choice (see Choosing the partition count)"),
        ("state", f"~{P['users'] * b['bytes_per_user'] / 1e9:.0f} GB in all, ~{per_inst_users * b['bytes_per_user'] / 1e9:.2f} GB "
                  f"per instance ({per_inst_users / 1e6:.1f}M users)", f"{b['bytes_per_user']} B/user resident"),
        ("`SEGSTREAM_MAX_USERS` per instance", f"{max_users:,.0f}",
         f"{P['failover_share']}× an instance's share of users, to absorb a failed peer's partitions"),
        ("memory per instance", f"~{(max_users * b['bytes_per_user'] + b['baseline_bytes']) / 1e9:.1f} GB",
         f"`SEGSTREAM_MAX_USERS` × {b['bytes_per_user']} B + {b['baseline_bytes'] / 1e9:.2f} GB process baseline"),
        ("state changelog", f"~{P['users'] * b['cl_bytes_per_user'] / 1e9:.0f} GB of latest values per replica, "
                            f"~{P['users'] / P['partitions'] * b['cl_bytes_per_user'] / 1e9:.2f} GB per partition",
         f"{b['cl_bytes_per_user']} B/user in the changelog"),
        ("restore of one partition", f"~{P['users'] / P['partitions'] / b['cl_restore_rate']:.0f} s",
         f"{P['users'] / P['partitions'] / 1e6:.2f}M users at {b['cl_restore_rate']:,} users/s"),
        ("failover", f"~{P['users'] / P['partitions'] / b['cl_restore_rate']:.0f} s: a failed instance's "
                     f"{P['partitions'] // P['instances']} partitions go to {P['partitions'] // P['instances']} peers, "
                     "each restores one in parallel (plus the session timeout)",
         "restore of one partition, above"),
        ("changelog writes", f"at most ~{P['events_per_s'] * b['cl_bytes_per_user'] / 1e6:.0f} MB/s in all "
                             f"(~{P['events_per_s'] * b['cl_bytes_per_user'] / P['instances'] / 1e6:.1f} MB/s per instance)",
         f"bound: one {b['cl_bytes_per_user']:.0f}-byte record per input event; a checkpoint writes a user once however "
         "many events it had, so the spacing of checkpoints under load lowers it"),
        ("output records", f"~{round(P['events_per_s'] * b['changes_per_event'], -3):,.0f} segment events/s on `user-segments`",
         f"{b['changes_per_event']:.3f} segment events per input event (k = 8, {b['tp_users']:,} users, log-file run)"),
        ("model-topic writes", f"{summaries_per_s:,.0f} summaries/s, ~{summaries_per_s * summary_b / 1e6:.2f} MB/s at k = {P['segments']}",
         f"one summary per {P['model_update_events']:,} events of an instance; {SUMMARY_FACTOR}k × {b['dim']} dims × 4 B + ~150 B "
         f"= ~{summary_b / 1e3:.1f} KB (from the schema, not measured)"),
        ("model-topic reads", f"~{P['instances'] * summaries_per_s * summary_b / 1e6:.0f} MB/s in all",
         "every instance reads every record"),
    ]
    return _table(("Quantity", "Estimate", "Derived from"), rows)


def changelog_table(results: Results) -> str:
    """`bench.changelog`: restore rate and bytes per user, then the loop's events/s with and without the
    changelog (medians of three interleaved runs each) and the bytes a checkpoint writes, per result file."""
    rows, tp = [], []
    for r in results:
        f, label = r["figures"], r["params"].get("label") or "this version"
        for x in f.get("restore", []):
            rows.append((label, f"{x['users']:,}", str(x["partitions"]), f"{x['read_seconds']:.2f} s",
                         f"{x['restore_seconds']:.2f} s", f"{x['users_per_s'] / 1e3:.0f}k", f"{x['bytes_per_user']}",
                         f"{x['write_seconds']:.2f} s", f"{r['machine']['loadavg_at_start'][0]}"))
        runs = f.get("throughput", [])
        for t in runs if isinstance(runs, list) else [runs]:
            ck = tuple(f"{t[k] / 1e3:,.1f} kB" if k in t else "—" for k in
                       ("bytes_per_checkpoint", "model_bytes_per_checkpoint"))
            cpu = tuple(f"{t[f'cpu_us_per_event_{w}_changelog'] + t[f'broker_cpu_us_per_event_{w}_changelog']:.1f}"
                        if f"cpu_us_per_event_{w}_changelog" in t else "—" for w in ("without", "with"))
            share = t.get("checkpoint_share", 1.0)  # the code before checkpointed after every batch
            gap = t.get("checkpoint_max_gap_ms")  # recorded since the gap became a bench parameter
            tp.append((label, f"{share:g}" + (" (every batch)" if share >= 1 else ""),
                       "—" if gap is None or share >= 1 else f"{gap / 1000:g} s",
                       f"{t.get('batch_max_events', 5000):,}", f"{t['without_changelog_events_per_s']:,}",
                       f"{t['with_changelog_events_per_s']:,}", f"{t['ratio']:.2f}", *cpu, *ck,
                       f"{r['machine']['loadavg_at_start'][0]}"))
    out = []
    if rows:
        out.append(_table(("Code", "Users", "Changelog partitions", "Read", "Restore (read + load)", "Users/s",
                           "Bytes per user", "One full checkpoint written", "Load average (1 min) at start"), rows))
    if tp:
        out.append(_table(("Code", "Checkpoint share", "Most time between checkpoints", "Batch (events)", "Events/s without changelog (median of 3)",
                           "With changelog", "Ratio", "CPU µs per event without (process + broker)", "With",
                           "Changelog bytes per checkpoint", "Model bytes per checkpoint",
                           "Load average (1 min) at start"), tp))
    cmds = sorted({_cmd(r) for r in results})
    return "\n\n".join(out) + f"\n\nCommand: {', '.join(cmds)}."


def drift_table(results: Results) -> str:
    """`bench.drift`: drift alarms on the alerting test's planted logs, per code version and batch size."""
    rows = []
    for r in results:
        label = r["params"].get("label") or "this version"
        for b in r["figures"]["by_batch"]:
            delays = "—" if b["delay_events_min"] is None else \
                f"{b['delay_events_min']:,} / {b['delay_events_median']:,.0f} / {b['delay_events_max']:,}"
            rows.append((label, f"{b['batch']:,}", str(b["seeds"]),
                         f"{b['stationary_logs_with_alarm']} ({b['stationary_alarms']} alarms)",
                         str(b["drifting_logs_alarm_before_drift"]), f"{b['drifting_logs_detected']} of {b['seeds']}",
                         delays, f"{r['machine']['loadavg_at_start'][0]}"))
    cmds = sorted({_cmd(r) for r in results})
    return _table(("Code", "Batch (events)", "Seeds", "Stationary logs with an alarm", "Drifting logs with an alarm before the drift",
                   "Drifting logs detected", "Events from the drift to the first alarm (min / median / max)",
                   "Load average (1 min) at start"), rows) + f"\n\nCommand: {', '.join(cmds)}."


RENDERERS: dict[str, Callable[[Results], str]] = {
    "changelog": changelog_table, "drift": drift_table,
    "machine": machine_line, "suite": suite_table, "memory": memory_table, "goals": goals_table, "encoders": encoders_table,
    "scaleout": scaleout_table, "fetch-wait": fetch_wait_table, "transports": transports_table, "producer-latency": producer_latency_table, "sizing": sizing_table, "plan": plan_table,
    "planted": planted_table, "movielens": movielens_table, "selection": selection_table,
}


def render(kind: str, files: str) -> str:
    """The text of a ``<!-- bench:KIND FILES -->`` block (FILES: comma-separated)."""
    return RENDERERS[kind](load(*files.split(","))) + "\n"


def blocks(text: str) -> list[tuple[str, str, str]]:
    """(kind, files, current text) of every block of a doc."""
    return [(m.group(1), m.group(2), m.group(3)) for m in BLOCK.finditer(text)]


def update(text: str) -> str:
    return BLOCK.sub(lambda m: f"<!-- bench:{m.group(1)} {m.group(2)} -->\n{render(m.group(1), m.group(2))}"
                               "<!-- /bench -->", text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", help="a suite results file, or docs with --update/--check")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--update", action="store_true", help="re-render every bench block of the given docs in place")
    g.add_argument("--check", action="store_true", help="exit 1 when a bench block differs from its rendering")
    a = p.parse_args(argv)
    if a.update or a.check:
        stale = []
        for doc in a.files:
            text = Path(doc).read_text()
            new = update(text)
            if new != text:
                stale.append(doc)
                if a.update:
                    Path(doc).write_text(new)
        verb = "updated" if a.update else "stale"
        for doc in stale:
            print(f"{verb}: {doc}")
        return 1 if stale and a.check else 0
    results = load(*a.files)
    print(machine_line(results) + "\n")
    print(suite_table(results))
    print("\n" + goals_table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
