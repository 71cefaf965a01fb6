#!/usr/bin/env python3
"""Write a copy of a Prometheus rule file with every duration scaled: for alert drills and end-to-end tests.

    python deploy/prometheus/scale_rules.py --factor 1/60 --min-range 5s segstream.rules.yml > fast.rules.yml

Scales each rule's ``for:`` and, in expressions, every range window and
subquery (``[5m]``, ``[1h:1m]``) and ``offset`` by ``--factor``. Range windows
are floored at ``--min-range``: ``rate``/``increase``/``delta`` need at least
two scrapes inside their window, so keep it at two or more scrape intervals.
Numbers in expressions (thresholds, including ages in seconds such as ``> 900``)
are left alone. The rule file is rewritten as text, so comments and layout
stay; nothing but the standard library is needed. The same function serves the
tests (``tests/stream/observability/test_alerts_e2e.py``), so there is no
hand-kept fast copy of the rules to drift away from the real ones.

    >>> print(scale_text("expr: rate(x[5m]) > 1 and y offset 1h\\nfor: 10m\\n", 1 / 60, 5000), end="")
    expr: rate(x[5s]) > 1 and y offset 1m
    for: 10s
    >>> scale_text("expr: max_over_time(x[1h:1m])\\nfor: 0m\\n", 1 / 60, 5000)
    'expr: max_over_time(x[1m:1s])\\nfor: 0s\\n'
"""

from __future__ import annotations

import argparse
import re
import sys
from fractions import Fraction

__all__ = ["parse_duration", "format_duration", "scale_text"]

_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000, "y": 31_536_000_000}
_PART = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_DUR = r"(?:\d+(?:ms|s|m|h|d|w|y))+"
_FOR = re.compile(rf"(?m)^([ \t]*for:[ \t]*)({_DUR})[ \t]*$")
_RANGE = re.compile(rf"\[({_DUR})(?::({_DUR})?)?\]")
_OFFSET = re.compile(rf"\boffset\s+({_DUR})")


def parse_duration(text: str) -> int:
    """Milliseconds of a Prometheus duration (``1h30m``, ``90s``, ``500ms``)."""
    parts = _PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a Prometheus duration: {text!r}")
    return sum(int(n) * _UNITS_MS[u] for n, u in parts)


def format_duration(ms: int) -> str:
    """The shortest exact spelling Prometheus reads (``5s``, ``1m``, ``1500ms``)."""
    for unit in ("h", "m", "s"):
        if ms and ms % _UNITS_MS[unit] == 0:
            return f"{ms // _UNITS_MS[unit]}{unit}"
    return "0s" if ms == 0 else f"{ms}ms"


def scale_text(text: str, factor: float, min_range_ms: int = 0) -> str:
    """``text`` (a rule file) with ``for:``, range windows, subquery steps and offsets scaled by ``factor``."""
    def scaled(dur: str, floor: int = 0) -> str:
        return format_duration(max(floor, round(parse_duration(dur) * factor)))

    def window(m: re.Match[str]) -> str:
        rng = scaled(m.group(1), min_range_ms)
        if m.group(0).count(":") == 0:
            return f"[{rng}]"
        step = "" if m.group(2) is None else scaled(m.group(2), 1000)
        return f"[{rng}:{step}]"

    text = _FOR.sub(lambda m: m.group(1) + scaled(m.group(2)), text)
    text = _RANGE.sub(window, text)
    return _OFFSET.sub(lambda m: "offset " + scaled(m.group(1)), text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("rules", help="rule file to read")
    p.add_argument("--factor", required=True, help="multiplier of every duration, e.g. 1/60 (minutes become seconds)")
    p.add_argument("--min-range", default="0s", help="floor of range windows, e.g. 5s (two or more scrape intervals)")
    p.add_argument("-o", "--out", default="-", help="file to write (default: stdout)")
    args = p.parse_args(argv)
    factor = float(Fraction(args.factor))
    with open(args.rules) as fh:
        out = scale_text(fh.read(), factor, parse_duration(args.min_range))
    if args.out == "-":
        sys.stdout.write(out)
    else:
        with open(args.out, "w") as fh:
            fh.write(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
