"""The codebase's shape: data flows one way, the Kafka clients are reached through one seam, each package names
its API, and comments say why.

``state`` and ``encoders`` sit below ``stream`` and never import it; only
``stream/kafka/`` imports kafka-python or confluent-kafka, so a client upgrade
(or a third client) touches one package.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PRODUCT = ("stream", "state", "encoders", "evaluation", "eventlogs")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def _modules(*packages: str) -> list[Path]:
    return sorted(p for pkg in packages for p in (REPO / pkg).rglob("*.py"))


def _top(name: str) -> str:
    return name.split(".", 1)[0]


@pytest.mark.parametrize("package", ["state", "encoders"])
def test_lower_layers_never_import_stream(package):
    offenders = {str(p.relative_to(REPO)): sorted(n for n in _imports(p) if _top(n) == "stream")
                 for p in _modules(package)}
    assert not {k: v for k, v in offenders.items() if v}


def test_state_never_imports_encoders():
    offenders = {str(p.relative_to(REPO)) for p in _modules("state") if any(_top(n) == "encoders" for n in _imports(p))}
    assert not offenders


@pytest.mark.parametrize("client", ["kafka", "confluent_kafka"])
def test_only_the_kafka_seam_imports_a_kafka_client(client):
    seam = REPO / "stream" / "kafka"
    offenders = {str(p.relative_to(REPO)): sorted(n for n in _imports(p) if _top(n) == client)
                 for p in _modules(*PRODUCT) if seam not in p.parents}
    assert not {k: v for k, v in offenders.items() if v}


def test_confluent_kafka_is_imported_only_when_asked_for():
    """kafka-python users need not install confluent-kafka: the seam imports it inside functions only."""
    for path in _modules("stream"):
        top_level = set()
        for node in ast.parse(path.read_text(), str(path)).body:
            if isinstance(node, ast.Import):
                top_level.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                top_level.add(node.module)
        assert not any(_top(n) == "confluent_kafka" for n in top_level), path


def test_the_layering_check_sees_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import kafka.errors\nfrom stream.kafka import clients\nfrom . import x\n"
                     "def f():\n    import confluent_kafka\n")
    assert _imports(probe) == {"kafka.errors", "stream.kafka", "confluent_kafka"}


def _packages() -> list[str]:
    return sorted(str(p.parent.relative_to(REPO)).replace("/", ".") for p in _modules(*PRODUCT)
                  if p.name == "__init__.py")


@pytest.mark.parametrize("package", _packages())
def test_each_package_names_its_public_api(package):
    import importlib

    mod = importlib.import_module(package)
    assert (mod.__doc__ or "").strip(), f"{package}/__init__.py says nothing about the package"
    if package != "stream":  # the top package only names its sub-packages
        assert mod.__all__, package
        for name in mod.__all__:
            assert getattr(mod, name) is not None, (package, name)


def test_comments_say_why_not_which_issue():
    """A comment or docstring naming a tracker issue means nothing to the next reader:
    the tracker is not in the repository, and git history keeps that link."""
    pattern = re.compile(r"\bissues? #?\d+", re.I)  # the only line allowed to spell the pattern
    here = Path(__file__).resolve()
    files = _modules(*PRODUCT, "tests", "bench")
    offenders = [f"{p.relative_to(REPO)}:{i}" for p in files
                 for i, line in enumerate(p.read_text().splitlines(), 1)
                 if pattern.search(line) and not (p == here and "re.compile" in line)]
    assert not offenders


#: Tests that run ``segstream`` against a broker on one Kafka client only, and why.
ONE_CLIENT = {
    "tests/evaluation/test_movielens_e2e.py::test_movielens_replay_through_broker":
        "segmentation quality over 100k ratings; its Kafka paths are the other tests' (both clients)",
    "tests/stream/contracts/test_segment_topics.py::test_dbstream_movielens_replay_publishes_lineage_that_explains_every_segment_id":
        "DBSTREAM lineage over 100k ratings; lineage and profiles topics are written on both clients by test_erasure_everywhere",
    "tests/stream/runtime/test_scaleout.py::test_three_instances_share_one_model_through_a_kill_a_join_and_a_restart":
        "the model topic on both clients: tests/stream/runtime/test_model_sync.py; three members through a kill and "
        "a join on confluent: test_rebalance",
    "tests/stream/runtime/test_global_groups.py::test_three_members_share_a_model_that_keeps_every_partitions_groups":
        "segmentation across members; the model topic on both clients: tests/stream/runtime/test_model_sync.py",
    "tests/stream/runtime/test_global_groups.py::test_the_next_leader_continues_the_versions_and_a_late_member_starts_from_the_latest":
        "leader hand-over on the model topic (the model topic on both clients: tests/stream/runtime/test_model_sync.py)",
    "tests/stream/observability/test_endpoint.py::test_segstream_run_guards_metrics_with_the_password_from_the_environment":
        "the HTTP metrics endpoint, not Kafka",
    "tests/stream/observability/test_observability.py::test_prometheus_scrapes_live_consumer_and_dashboard_metrics_exist":
        "a Prometheus server scraping the process, not Kafka",
    "tests/stream/observability/test_alerts_e2e.py::test_alerts_fire_on_drift_down_and_stall_and_dashboard_queries_return_data":
        "Prometheus alert rules, not Kafka",
}


def _runs_segstream_on_a_broker() -> dict[str, bool]:
    """Every test function that runs ``segstream run`` (child process or in-process) against a broker fixture:
    ``file::name`` -> whether it runs on both Kafka clients (the ``kafka_client`` fixture, or a ``path``
    parameter that includes confluent)."""
    found: dict[str, bool] = {}
    for path in sorted((REPO / "tests").rglob("test_*.py")):
        text = path.read_text()
        module_wide = 'usefixtures("kafka_client")' in text
        for node in ast.walk(ast.parse(text, str(path))):
            if not (isinstance(node, ast.FunctionDef) and node.name.startswith("test_")):
                continue
            params = [a.arg for a in node.args.args]
            body = ast.unparse(node)
            runs = "SegstreamProcess(" in body or "run_consumer(" in body or "'stream.cli', 'run'" in body
            if not (runs and any(p == "broker" or p.endswith("_broker") for p in params)):
                continue
            found[f"{path.relative_to(REPO)}::{node.name}"] = (
                module_wide or "kafka_client" in params or ("path" in params and "'confluent'" in body))
    return found


def test_every_integration_test_of_the_run_loop_runs_on_both_kafka_clients():
    """A test that runs ``segstream`` against a broker takes the ``kafka_client`` fixture (so ``./dev test``
    runs it on kafka-python and on confluent), or ``ONE_CLIENT`` says why not."""
    found = _runs_segstream_on_a_broker()
    assert len(found) >= 20  # the scan sees the integration suite
    single = sorted(t for t, both in found.items() if not both and t not in ONE_CLIENT)
    assert not single
    assert not sorted(t for t in ONE_CLIENT if t not in found or found[t])  # the list holds no stale entry
