"""deploy/: alert rules (promtool), docker-compose.yml and Dockerfile checked by parsing, dashboard shape."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stream.settings import Settings, setting_fields

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
RULES = DEPLOY / "prometheus" / "segstream.rules.yml"
METRIC = re.compile(r"\bsegstream_[a-z0-9_]+")


def _promtool() -> str:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.fail("promtool not found: ./dev test installs Debian's prometheus package (apt-get install prometheus)")
    return tool


def dashboard_and_rule_metrics() -> set[str]:
    """Every segstream_* name used by a dashboard query or an alert expression."""
    dash = json.loads((DEPLOY / "grafana" / "dashboards" / "segstream.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    rules = yaml.safe_load(RULES.read_text())
    exprs += [r["expr"] for g in rules["groups"] for r in g["rules"]]
    return {m for e in exprs for m in METRIC.findall(e)}


def test_promtool_check_rules() -> None:
    out = subprocess.run([_promtool(), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 16 rules found" in out.stdout + out.stderr


def _rules() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def _doc_anchors() -> set[str]:
    """GitHub-style anchors of the headings of the runbook (docs/operations.md)."""
    anchors = set()
    for name in ("operations.md",):
        path = REPO / "docs" / name
        if path.exists():
            for heading in re.findall(r"^#+\s+(.+?)\s*$", path.read_text(), re.M):
                anchors.add(re.sub(r"[^a-z0-9 _-]", "", heading.lower()).replace(" ", "-"))
    return anchors


def test_every_alert_has_a_runbook_entry() -> None:
    anchors = _doc_anchors()
    for rule in _rules():
        runbook = rule["annotations"]["runbook"]
        assert runbook == f"docs/operations.md#{rule['alert'].lower()}", runbook
        assert rule["alert"].lower() in anchors, f"no runbook heading for {rule['alert']}"
        assert rule["labels"]["severity"] in ("page", "warn")


def test_the_rules_cover_down_stall_drift_and_the_rest() -> None:
    exprs = {r["alert"]: r["expr"] for r in _rules()}
    assert 'up{job="segstream"} == 0' in exprs["SegstreamTargetDown"]
    assert 'absent(up{job="segstream"})' in exprs["SegstreamTargetAbsent"]
    # drift on the counter of detections over a window, not on the held gauge
    assert "increase(segstream_drift_alarms_total[" in exprs["SegstreamDriftDetected"]
    assert "segstream_drift_alarm_active" not in " ".join(exprs.values())
    for name, metric in (("SegstreamConsumerStalled", "segstream_consumer_lag_records"),
                         ("SegstreamSegmentIdChurnHigh", "segstream_segment_lineage_events_total"),
                         ("SegstreamModelStale", "segstream_model_age_seconds"),
                         ("SegstreamCheckpointStale", "segstream_last_checkpoint_timestamp_seconds"),
                         ("SegstreamProcessingDelayed", "segstream_oldest_unprocessed_event_age_seconds"),
                         ("SegstreamSegmentCollapsed", "segstream_segment_share")):
        assert metric in exprs[name], name


def test_scaled_rules_keep_every_rule_and_shorten_every_duration(tmp_path) -> None:
    import doctest

    from prom_helpers import scale_rules_module

    scale = scale_rules_module()
    assert doctest.testmod(scale).failed == 0
    text = RULES.read_text()
    fast = scale.scale_text(text, 1 / 60, scale.parse_duration("5s"))
    (tmp_path / "fast.yml").write_text(fast)
    out = subprocess.run([_promtool(), "check", "rules", str(tmp_path / "fast.yml")], capture_output=True, text=True)
    assert out.returncode == 0 and "SUCCESS: 16 rules found" in out.stdout, out.stdout + out.stderr
    slow = {r["alert"]: r for r in _rules()}
    quick = {r["alert"]: r for g in yaml.safe_load(fast)["groups"] for r in g["rules"]}
    assert slow.keys() == quick.keys()
    windows = re.compile(r"\[(\w+)\]")
    for name, rule in slow.items():
        assert scale.parse_duration(quick[name]["for"]) == scale.parse_duration(rule["for"]) // 60, name
        for long_w, short_w in zip(windows.findall(rule["expr"]), windows.findall(quick[name]["expr"]), strict=True):
            assert scale.parse_duration(short_w) == max(5000, scale.parse_duration(long_w) // 60), name
        # thresholds stay: the expressions differ only inside [...]
        assert windows.sub("[]", rule["expr"]) == windows.sub("[]", quick[name]["expr"]), name
    # the command line writes the same text
    out = subprocess.run([sys.executable, str(DEPLOY / "prometheus" / "scale_rules.py"), "--factor", "1/60",
                          "--min-range", "5s", str(RULES)], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout == fast, out.stderr


def test_promtool_unit_tests_cover_every_alert() -> None:
    test_file = DEPLOY / "prometheus" / "segstream.rules.test.yml"
    out = subprocess.run([_promtool(), "test", "rules", test_file.name], cwd=test_file.parent,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    tested = {t["alertname"] for case in yaml.safe_load(test_file.read_text())["tests"]
              for t in case["alert_rule_test"] if t["exp_alerts"]}
    assert alerts == tested  # each alert has a case where it fires (and the cases also check it does not fire early)


def test_prometheus_config_parses_and_points_at_rules() -> None:
    cfg = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert cfg["scrape_configs"][0]["static_configs"][0]["targets"] == ["segstream:9400"]
    assert cfg["rule_files"] == ["/etc/prometheus/segstream.rules.yml"]


def test_dashboard_and_provisioning() -> None:
    dash = json.loads((DEPLOY / "grafana" / "dashboards" / "segstream.json").read_text())
    titles = " ".join(p["title"].lower() for p in dash["panels"])
    for topic in ("throughput", "lag", "latency", "segment sizes", "churn", "drift", "centroid shift", "dlq"):
        assert topic in titles, topic
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    ds = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    uid = ds["datasources"][0]["uid"]
    assert all(p["datasource"]["uid"] == uid for p in dash["panels"])
    prov = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "segstream.yml").read_text())
    assert prov["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    assert len(dashboard_and_rule_metrics()) >= 20


def test_docker_compose_file() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"kafka", "topic-init", "encoder-init", "segstream", "generator", "prometheus", "grafana"} <= set(services)
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert "controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"]  # KRaft, no ZooKeeper
    assert "zookeeper" not in services
    for name in ("kafka", "segstream", "prometheus", "grafana"):
        assert "healthcheck" in services[name], name
        assert services[name]["restart"] in ("unless-stopped", "always", "on-failure"), name
    assert services["segstream"]["build"] == "."
    assert services["segstream"]["depends_on"]["topic-init"]["condition"] == "service_completed_successfully"
    # every published port is bound to loopback: nothing is reachable from other hosts by default
    ports = [p for s in services.values() for p in s.get("ports", [])]
    assert all(p.startswith("127.0.0.1:") for p in ports), ports
    published = {p.split(":")[1] for p in ports}
    assert {"9090", "3000", "9400", "29092"} <= published
    # bind mounts point at files and folders in the repo
    for svc in services.values():
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("./"):
                assert (REPO / src).exists(), src
    # every SEGSTREAM_* name given to a service is one the CLI reads
    known = {f.metadata["env"] for f in setting_fields()}
    for svc in ("segstream", "generator", "encoder-init"):
        env = services[svc]["environment"]
        names = {k for k in env if k.startswith("SEGSTREAM_")}
        assert names and names <= known, names - known
    # the scrape target's port is the one segstream serves on
    env = services["segstream"]["environment"]
    assert env["SEGSTREAM_METRICS_PORT"] == "9400"
    assert "/healthz" in " ".join(services["segstream"]["healthcheck"]["test"])


def _compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def _mounts(service: dict) -> dict[str, str]:
    """Container path -> named volume of a service's named-volume mounts."""
    out = {}
    for vol in service.get("volumes", []):
        src, dst = vol.split(":")[:2]
        if not src.startswith((".", "/")):
            out[dst] = src
    return out


def test_compose_grafana_credentials_come_from_the_environment() -> None:
    compose = _compose()
    grafana = compose["services"]["grafana"]["environment"]
    password = grafana["GF_SECURITY_ADMIN_PASSWORD"]
    assert re.fullmatch(r"\$\{GRAFANA_ADMIN_PASSWORD:\?[^}]+\}", password), password  # no default: compose refuses without it
    assert "admin/admin" not in (REPO / "docker-compose.yml").read_text()
    assert grafana["GF_USERS_ALLOW_SIGN_UP"] == "false" and grafana["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert "--web.enable-lifecycle" not in compose["services"]["prometheus"]["command"]


def test_compose_state_and_encoder_are_durable() -> None:
    compose = _compose()
    services, volumes = compose["services"], set(compose["volumes"])
    seg = services["segstream"]
    env, mounts = seg["environment"], _mounts(seg)
    # checkpoints in a named volume
    ckpt = env["SEGSTREAM_CHECKPOINT_DIR"]
    assert mounts.get(ckpt) in volumes, (ckpt, mounts)
    # the encoder artifact: made by encoder-init into a named volume segstream mounts, before segstream starts
    encoder = env["SEGSTREAM_ENCODER"]
    model_dir = str(Path(encoder).parent)
    assert mounts.get(model_dir) in volumes
    init = services["encoder-init"]
    assert _mounts(init).get(model_dir) == mounts[model_dir]
    assert f"--out {encoder}" in " ".join(init["command"])
    assert seg["depends_on"]["encoder-init"]["condition"] == "service_completed_successfully"
    # the image owns those mount points (named volumes take the owner of the image's directory)
    dockerfile = (REPO / "Dockerfile").read_text()
    for path in (ckpt, model_dir):
        assert path in dockerfile, path


def test_dockerfile_builds_the_cli() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.\d+", text, re.M)
    for pkg in ("stream", "state", "encoders", "eventlogs", "evaluation"):
        assert f"COPY {pkg} ./{pkg}" in text
    assert "torch==2.13.0" in text
    assert 'ENTRYPOINT ["segstream"]' in text and "HEALTHCHECK" in text
    for env in re.findall(r"SEGSTREAM_[A-Z_]+", text):
        assert env in {f.metadata["env"] for f in setting_fields()}, env


def test_compose_creates_every_topic_with_the_products_policies() -> None:
    """topic-init creates every topic the stack uses; each topic segstream writes gets exactly the configs
    segstream itself would create it with (stream/kafka/topics.py: compacted where the value is the
    latest per key, a stated retention for histories), and the input topic a stated retention."""
    import shlex

    from stream.kafka.topics import TOPIC_POLICIES, topic_plan

    compose = _compose()
    created: dict[str, dict[str, str]] = {}
    for line in "\n".join(compose["services"]["topic-init"]["command"]).splitlines():
        words = shlex.split(line)
        if words[:1] == ["create"]:
            name = words[words.index("--topic") + 1]
            created[name] = dict(words[i + 1].split("=", 1) for i, w in enumerate(words) if w == "--config")
    settings = Settings.from_env({k: str(v) for k, v in compose["services"]["segstream"]["environment"].items()})
    _, want = topic_plan(settings, {p.role: 1 for p in TOPIC_POLICIES if p.setting and p.role != "input"})
    assert {name: created.get(name) for name in want} == want
    assert created[settings.input_topic].get("cleanup.policy", "delete") == "delete"
    assert "retention.ms" in created[settings.input_topic]
