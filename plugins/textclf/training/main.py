"""The ``train`` command: read examples, train the classifier, export it with its metrics.

Examples come from a Parquet file (``--examples``) or, inside a Vertex AI custom job, from a
BigQuery query (``--examples-query`` with ``--query-parameters``, ``--bigquery-project`` and
``--bigquery-location``). Run it as ``python -m textclf train ...`` or
``python -m textclf.training.main ...``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of the ``train`` command."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--examples", metavar="FILE.parquet", help="Parquet file of examples")
    source.add_argument("--examples-query", metavar="SQL_FILE", help="file with a BigQuery query that returns the examples")
    parser.add_argument("--query-parameters", metavar="JSON", default="{}", help="JSON object of the query's named parameters")
    parser.add_argument("--bigquery-project", help="project that runs the examples query")
    parser.add_argument("--bigquery-location", help="BigQuery location of the examples query, e.g. US")
    parser.add_argument("--output-dir", required=True, help="version folder to write saved_model/ and metrics.json into, local or gs://")
    parser.add_argument("--text-column", default="text", help="STRING column with the text (default: text)")
    parser.add_argument("--label-column", default="label", help="STRING or integer column with the class (default: label)")
    parser.add_argument("--date-column", default="example_date", help="DATE column for the time split (default: example_date)")
    parser.add_argument("--input-name", default="text", help="name of the SavedModel's string input (default: text)")
    parser.add_argument("--max-epochs", type=int, default=8, help="most training epochs (default: 8)")
    parser.add_argument("--seed", type=int, default=1234, help="random seed (default: 1234)")
    parser.add_argument("--trained-before", metavar="YYYY-MM-DD", help="day the model is trained for (default: the day after the latest example)")
    parser.add_argument(
        "--refit-on-all-examples",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="after early stopping, fit again on all examples, validation slice included (default: off)",
    )
    parser.add_argument(
        "--class-weighting",
        choices=("none", "balanced"),
        default="balanced",
        help="'balanced' weights classes inversely to their frequency, 'none' weights every example alike (default: balanced)",
    )


def run_command(args: argparse.Namespace) -> int:
    """Run ``train`` and return the exit status."""
    examples = _read_examples(args)

    from textclf.training.train import train_and_export

    metrics = train_and_export(
        examples,
        args.output_dir,
        text_column=args.text_column,
        label_column=args.label_column,
        date_column=args.date_column,
        input_name=args.input_name,
        max_epochs=args.max_epochs,
        seed=args.seed,
        class_weighting=args.class_weighting,
        trained_before=args.trained_before,
        refit_on_all_examples=args.refit_on_all_examples,
    )
    log.info(
        "Trained model in %s: accuracy %.4f, balanced accuracy %.4f",
        args.output_dir, metrics["accuracy"], metrics["balanced_accuracy"],
    )
    return 0


def _read_examples(args: argparse.Namespace):
    if args.examples:
        import pyarrow.parquet as pq

        path = Path(args.examples)
        if not path.is_file():
            raise SystemExit(f"Examples file {path} not found. Pass an existing Parquet file as --examples.")
        table = pq.read_table(path)
        log.info("Read %s examples from %s", table.num_rows, path)
        return table

    missing = [flag for flag, value in (("--bigquery-project", args.bigquery_project), ("--bigquery-location", args.bigquery_location)) if not value]
    if missing:
        raise SystemExit(f"--examples-query needs {' and '.join(missing)}.")
    try:
        parameters = json.loads(args.query_parameters)
    except json.JSONDecodeError as error:
        raise SystemExit(f"--query-parameters is not valid JSON ({error}). Pass a JSON object such as '{{\"run_day\": \"2014-12-01\"}}'.") from None
    if not isinstance(parameters, dict):
        raise SystemExit(f"--query-parameters must be a JSON object, not {type(parameters).__name__}.")
    sql = _read_text(args.examples_query)

    from textclf.training.bigquery_examples import read_examples

    table = read_examples(sql, parameters, args.bigquery_project, args.bigquery_location)
    log.info("Read %s examples with the query in %s", table.num_rows, args.examples_query)
    return table


def _read_text(path: str) -> str:
    # The query file may sit in Cloud Storage when the command runs in a Vertex AI job.
    if path.startswith("gs://"):
        import tensorflow as tf

        with tf.io.gfile.GFile(path, "r") as handle:
            return handle.read()
    file = Path(path)
    if not file.is_file():
        raise SystemExit(f"Query file {file} not found. Pass an existing .sql file as --examples-query.")
    return file.read_text(encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` as the ``train`` command's arguments and run it."""
    parser = argparse.ArgumentParser(prog="python -m textclf.training.main", description="Train the text classifier and export it.")
    configure_parser(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())
