"""The ``segstream`` command line (``main_parser()`` + ``run_cli(argv) -> int``, kafka-python's CLI shape)."""

from stream.cli.main import main, main_parser, run_cli

__all__ = ["main", "main_parser", "run_cli"]
