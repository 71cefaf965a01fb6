"""Where a bench script's JSON goes besides stdout: ``--out FILE`` (JSON lines), with the command that made it."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any, Sequence


def command_line(module: str, argv: Sequence[str] | None) -> str:
    """``python -m MODULE ARGS`` as given, without ``--out FILE`` (where the result went is not how it was made)."""
    args = list(sys.argv[1:] if argv is None else argv)
    kept: list[str] = []
    skip = False
    for a in args:
        if skip:
            skip = False
        elif a == "--out":
            skip = True
        elif not a.startswith("--out="):
            kept.append(a)
    return " ".join(["python", "-m", module, *(shlex.quote(a) for a in kept)])


def append_result(path: str | Path, result: dict[str, Any], command: str) -> None:
    """Append ``result`` (with ``command``) as one JSON line to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(json.dumps({**result, "command": command}) + "\n")


def write_result(path: str | Path, result: dict[str, Any], command: str) -> None:
    """Write ``result`` (with ``command``) as one indented JSON document to ``path``, replacing it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**result, "command": command}, indent=1) + "\n")
