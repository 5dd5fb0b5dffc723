"""The ``textclf`` command line: ``python -m textclf COMMAND ...``.

Each command lives in the module that does its work. This file only dispatches, and it imports
the module of the chosen command alone, so ``textclf --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

# Command name -> (module, one-line help). Each module defines ``configure_parser(parser)`` and
# ``run_command(args) -> int``.
COMMANDS: dict[str, tuple[str, str]] = {
    "load": ("textclf.loader", "Load a Parquet, CSV/TSV or JSON lines file into a day-partitioned table."),
    "check-model": ("textclf.preflight", "Check that a SavedModel can be imported into BigQuery ML."),
    "train": ("textclf.training.main", "Train the text classifier on a file of examples and export it."),
    "demo": ("textclf.demo", "Run the daily DAG on the embedded warehouse for one day."),
    "deploy": ("textclf.deploy", "Upload the DAG, plugins and SQL to a Cloud Composer environment."),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="textclf", description="textclf: train, import and serve a text classifier for a daily Airflow pipeline.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages and show tracebacks of errors")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        subparser = subparsers.add_parser(name, help=help_text, description=help_text)
        subparser.set_defaults(module_name=module_name)
        # Only the chosen command's module is imported to add its arguments.
        if name in _requested_commands():
            importlib.import_module(module_name).configure_parser(subparser)
    return parser


def _requested_commands() -> set[str]:
    return {arg for arg in sys.argv[1:] if arg in COMMANDS}


def main(argv: Sequence[str] | None = None) -> int:
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    module = importlib.import_module(args.module_name)
    try:
        return int(module.run_command(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        # textclf raises these for bad input (files, dates, names, configuration) with a message
        # that names the fix, so the message is shown without a traceback unless -v is given.
        if args.verbose:
            raise
        print(f"error: {error}", file=sys.stderr)
        print("(run with -v for the traceback)", file=sys.stderr)
        return 1
