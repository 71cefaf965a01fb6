"""Table primitives of the figure reports (:mod:`bench.report`): load committed benchmark JSON, pick
results, render a Markdown table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

Results = list[dict[str, Any]]


def load(*paths: str | Path) -> Results:
    """Every JSON object of the given JSON-lines files (relative paths: from the repository root)."""
    out: Results = []
    for p in paths:
        path = Path(p) if Path(p).is_absolute() else ROOT / p
        if path.suffix == ".json":  # one JSON document (what `segstream evaluate` writes)
            out.append(json.loads(path.read_text()))
        else:
            out.extend(json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return out


def table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def of(results: Results, bench: str, **params: Any) -> list[dict[str, Any]]:
    return [r for r in results if r.get("bench") == bench
            and all(r.get("params", {}).get(k) == v for k, v in params.items())]


def one(results: Results, bench: str, **params: Any) -> dict[str, Any]:
    found = of(results, bench, **params)
    if not found:
        raise KeyError(f"no {bench} result with {params} in the benchmark JSON")
    return found[0]


def cmd(r: dict[str, Any]) -> str:
    return f"`{r.get('command', 'python -m bench.' + r.get('bench', '?'))}`"


def slash(values: list[float], fmt: str = ".3f") -> str:
    """``a / b / c``: one figure per k, say."""
    return " / ".join(format(v, fmt) for v in values)
