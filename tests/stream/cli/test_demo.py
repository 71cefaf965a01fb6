"""README's first command: `segstream demo` runs the whole product end to end on the embedded broker."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_demo_runs_end_to_end_and_recovers_the_planted_groups(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "stream.cli", "demo", "--workdir", str(tmp_path), "--users", "800",
         "--events", "24000", "--metrics-port", "0"],
        capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout + out.stderr
    users = re.search(r"([\d,]+) users hold a segment", text)
    ari = re.search(r"adjusted Rand index = ([\d.]+)", text)
    assert users and ari, text[-3000:]
    assert int(users.group(1).replace(",", "")) == 800
    assert float(ari.group(1)) > 0.8
    assert "dead-lettered" in text  # the demo log carries malformed records; they are reported, not fatal
