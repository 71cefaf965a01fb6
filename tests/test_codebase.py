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
