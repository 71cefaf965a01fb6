"""Offline evaluation harnesses (``segstream evaluate NAME``): JSON figures plus PNG plots.

Each harness is a module with ``add_arguments(parser)`` and ``main(args) -> int``;
it keeps heavy imports (scikit-learn, matplotlib: the ``eval`` extra) inside ``main``.
"""

from __future__ import annotations

import argparse
import importlib

__all__ = ["HARNESSES", "register_commands"]

#: name -> (module, one-line help)
HARNESSES: dict[str, tuple[str, str]] = {
    "movielens": ("evaluation.movielens", "HR@10 of streaming segments on MovieLens (80/20 per-user split), vs batch k-means"),
    "select": ("evaluation.selection", "choose the default encoder on MovieLens's validation split (never the held-out part)"),
    "planted": ("evaluation.planted", "ARI/NMI against planted groups, with drift, vs batch k-means"),
}


def register_commands(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="evaluation", required=True, metavar="HARNESS")
    for name, (module, help_) in HARNESSES.items():
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name == module:
                continue  # harness not part of this build
            raise
        p = sub.add_parser(name, help=help_)
        mod.add_arguments(p)
        p.set_defaults(evaluation_main=mod.main)
