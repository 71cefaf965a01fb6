"""README and docs/ staying true to the code and to the committed benchmark JSON."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench import report
from stream.settings import markdown_table

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    in_code = False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        m = None if in_code else re.match(r"#{1,6} (.*)", line)
        if m:
            slug = _slug(m.group(1))
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def test_configuration_doc_holds_the_settings_table():
    text = (DOCS / "configuration.md").read_text()
    assert markdown_table() in text, "docs/configuration.md is stale: paste `segstream config --markdown`"


def test_operations_doc_names_every_metric():
    from prometheus_client import generate_latest

    from stream.observability.metrics import Metrics

    exported = set(re.findall(r"^# TYPE (\S+)", generate_latest(Metrics().registry).decode(), re.M))
    text = (DOCS / "operations.md").read_text()
    missing = sorted(m for m in exported if f"`{m}" not in text)
    assert not missing, f"docs/operations.md's metrics table misses {missing}"


def test_readme_is_a_front_door():
    lines = README.read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; move reference material to docs/"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_at_existing_files(page):
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)}: broken links {broken}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_tracker_issue_numbers_or_run_dates(page):
    text = page.read_text()
    assert not re.search(r"\bissues?\s*#?\d+", text, re.I), "names an issue of a tracker not in the repo"
    assert not re.search(r"\b20\d\d-\d\d-\d\d\b|\b\d\d:\d\d UTC\b", text), "dates of particular runs belong in git history"


@pytest.mark.parametrize("page", sorted(DOCS.glob("*.md")), ids=lambda p: p.name)
def test_figure_tables_equal_the_rendering_of_the_committed_json(page):
    text = page.read_text()
    for kind, files, current in report.blocks(text):
        for f in files.split(","):
            assert (ROOT / f).is_file(), f"{page.name}: {f} is not committed"
        assert current == report.render(kind, files), (
            f"{page.name}: the {kind} table differs from {files}; run "
            f"`python -m bench.report --update {page.relative_to(ROOT)}` (never edit figures by hand)")


@pytest.mark.parametrize("name", ["performance.md", "scaling.md"])
def test_every_table_of_the_figure_pages_is_rendered(name):
    """A figure table typed by hand (outside a bench block) fails."""
    text = (DOCS / name).read_text()
    assert report.blocks(text), f"{name} has no rendered figure table"
    outside = report.BLOCK.sub("", text)
    rows = [ln for ln in outside.splitlines() if ln.startswith("|")]
    assert not rows, f"{name}: table rows outside a bench block: {rows[:3]}"
