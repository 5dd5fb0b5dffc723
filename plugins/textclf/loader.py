"""The ``load`` command: read a Parquet, CSV/TSV or JSON lines file and replace its days in a table.

The whole file is read and checked into Arrow before anything is written, so a file that cannot be
read, or has more malformed lines than allowed, leaves the table as it was.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textclf.config import DEFAULT_WAREHOUSE_CONN_ID
from textclf.identifiers import InvalidIdentifierError, TableRef, validate_column

if TYPE_CHECKING:
    import pyarrow as pa

    from textclf.warehouse.base import Warehouse

log = logging.getLogger(__name__)

FORMATS = ("parquet", "csv", "tsv", "jsonl")
_EXTENSIONS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}
# The online-prediction request format puts the text in a one-element list under this key.
REQUEST_TEXT_KEY = "data"
TEXT_COLUMN = "text"
MAX_REPORTED_LINES = 20


class LoadError(ValueError):
    """Raised when a file cannot be loaded; the message names the file, the line or column, and the fix."""


@dataclass
class BadLines:
    """Malformed lines of a file: every line number, and the reason for the first few."""

    line_numbers: list[int] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    def add(self, line_number: int, reason: str) -> None:
        self.line_numbers.append(line_number)
        if len(self.reasons) < MAX_REPORTED_LINES:
            self.reasons.append(f"line {line_number}: {reason}" if line_number else reason)

    def __len__(self) -> int:
        return len(self.line_numbers)

    def describe(self, path: Path) -> str:
        """Return a report of the malformed lines: the count, the first line numbers and their reasons."""
        # Line number 0 stands for a row whose line is unknown; its reason names the row instead.
        shown = ", ".join(str(number) for number in sorted(set(self.line_numbers) - {0})[:MAX_REPORTED_LINES]) or "unknown"
        more = f" (first {MAX_REPORTED_LINES} shown)" if len(self) > MAX_REPORTED_LINES else ""
        return f"{len(self)} malformed line(s) in {path}: lines {shown}{more}. " + "; ".join(self.reasons)


def guess_format(path: Path) -> str:
    """Return the file format that the extension of ``path`` names."""
    suffix = path.suffix.lower()
    if suffix not in _EXTENSIONS:
        raise LoadError(
            f"Cannot guess the format of {path} from its extension {suffix!r}: pass --format with one of "
            f"{', '.join(FORMATS)}."
        )
    return _EXTENSIONS[suffix]


def read_file(
    path: str | Path, *, partition_column: str, file_format: str | None = None
) -> tuple[pa.Table, BadLines]:
    """Read a file into Arrow, with ``partition_column`` converted to DATE, and list its malformed lines.

    Rows of malformed lines are left out of the table and listed in the returned ``BadLines``.

    :param path: the file to read.
    :param partition_column: the column that contains each row's day.
    :param file_format: ``parquet``, ``csv``, ``tsv`` or ``jsonl``; guessed from the extension if None.
    """
    path = Path(path)
    file_format = file_format or guess_format(path)
    if file_format not in FORMATS:
        raise LoadError(f"Unknown format {file_format!r} for {path}: use one of {', '.join(FORMATS)}.")
    if not path.is_file():
        raise LoadError(f"Input file {path} not found: check the path.")

    bad_lines = BadLines()
    if file_format == "parquet":
        data = _read_parquet(path)
        line_numbers = None
    elif file_format == "jsonl":
        data, line_numbers = _read_json_lines(path, bad_lines)
    else:
        data, line_numbers = _read_delimited(path, "\t" if file_format == "tsv" else ",", bad_lines)

    if partition_column not in data.column_names:
        raise LoadError(
            f"{path} has no partition column {partition_column!r}; the columns found are: "
            f"{', '.join(data.column_names) or 'none'}. Pass the right --partition-column."
        )
    data = _parse_partition_dates(path, data, partition_column, bad_lines, line_numbers)
    return data, bad_lines


def load_file(
    path: str | Path,
    *,
    warehouse: Warehouse,
    table: TableRef,
    partition_column: str,
    file_format: str | None = None,
    date: dt.date | None = None,
    max_bad_lines: int = 0,
) -> dict[dt.date, int]:
    """Load a file into a day-partitioned table, replacing every day it contains (or only ``date``).

    :param path: the Parquet, CSV/TSV (with a header) or JSON lines file.
    :param warehouse: the warehouse to write to.
    :param table: the day-partitioned table; created from the file's columns if missing.
    :param partition_column: the DATE column that partitions the table.
    :param file_format: ``parquet``, ``csv``, ``tsv`` or ``jsonl``; guessed from the extension if None.
    :param date: load only this day's rows, replacing only its partition.
    :param max_bad_lines: how many malformed lines may be left out before the load fails.
    :return: the number of rows written per day.
    """
    import pyarrow.compute as pc

    validate_column(partition_column, what="partition column")
    if max_bad_lines < 0:
        raise LoadError(f"`max_bad_lines` must be 0 or more, got {max_bad_lines}.")
    path = Path(path)

    data, bad_lines = read_file(path, partition_column=partition_column, file_format=file_format)
    if len(bad_lines) > max_bad_lines:
        raise LoadError(
            f"{bad_lines.describe(path)} Nothing was loaded: fix those lines, or pass --max-bad-lines "
            f"{len(bad_lines)} to load the other rows."
        )
    if bad_lines:
        log.warning("Skipping %s", bad_lines.describe(path))

    if date is not None:
        data = data.filter(pc.equal(data.column(partition_column), date))
        if data.num_rows == 0:
            raise LoadError(
                f"{path} has no rows with {partition_column} = {date}; nothing was loaded. Check --date."
            )
    log.info("Read %d rows from %s; loading into %s", data.num_rows, path, table)

    rows_per_day = warehouse.load_partitions(data, table=table, partition_column=partition_column)
    for day, rows in rows_per_day.items():
        log.debug("Partition %s of %s: %d rows", day, table, rows)
    if rows_per_day:
        log.info(
            "Loaded %d rows into %s, replacing %d day partitions from %s to %s",
            sum(rows_per_day.values()),
            table,
            len(rows_per_day),
            min(rows_per_day),
            max(rows_per_day),
        )
    return rows_per_day


def _read_parquet(path: Path) -> pa.Table:
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path)
    except (OSError, ValueError) as error:
        raise LoadError(f"Cannot read {path} as Parquet: {error}. Check that the file is a complete Parquet file.") from error


def _read_text(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise LoadError(f"Cannot read {path}: {error}.") from error
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise LoadError(
            f"{path} is not valid UTF-8: line {line} has the invalid byte(s) {raw[error.start:error.end]!r} "
            f"(byte offset {error.start}). Convert the file to UTF-8."
        ) from None
    # A UTF-8 byte order mark would otherwise become part of the first column name.
    return raw.removeprefix(b"\xef\xbb\xbf")


def _read_delimited(path: Path, delimiter: str, bad_lines: BadLines) -> tuple[pa.Table, list[int] | None]:
    import pyarrow as pa
    import pyarrow.csv as csv

    raw = _read_text(path)
    # Arrow reports line numbers only when reading on one thread and no value may span lines, and
    # values can span lines only when quoted.
    newlines_in_values = b'"' in raw
    skipped: list[int | None] = []

    def skip_invalid_row(row: Any) -> str:
        reason = f"expected {row.expected_columns} fields, found {row.actual_columns}"
        if row.number is None:
            skipped.append(None)
            # NOTE: with quoted values Arrow cannot tell the line, so the row's text identifies it instead.
            bad_lines.add(0, f"{reason} in row {row.text[:80]!r}")
        else:
            skipped.append(row.number)
            bad_lines.add(row.number, reason)
        return "skip"

    try:
        data = csv.read_csv(
            pa.BufferReader(raw),
            read_options=csv.ReadOptions(use_threads=newlines_in_values, block_size=64 << 20),
            parse_options=csv.ParseOptions(
                delimiter=delimiter, newlines_in_values=newlines_in_values, invalid_row_handler=skip_invalid_row
            ),
            convert_options=csv.ConvertOptions(strings_can_be_null=False, quoted_strings_can_be_null=False),
        )
    except pa.ArrowInvalid as error:
        raise LoadError(f"Cannot read {path} as {'TSV' if delimiter == chr(9) else 'CSV'} with a header: {error}") from error
    if newlines_in_values or None in skipped:
        return data, None

    # The header is line 1; rows follow one per line, minus the skipped ones.
    skipped_set = set(skipped)
    line_numbers = []
    line = 2
    while len(line_numbers) < data.num_rows:
        if line not in skipped_set:
            line_numbers.append(line)
        line += 1
    return data, line_numbers


def _read_json_lines(path: Path, bad_lines: BadLines) -> tuple[pa.Table, list[int]]:
    import pyarrow as pa

    raw = _read_text(path)
    records = []
    for line_number, line in enumerate(raw.decode("utf-8").split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            bad_lines.add(line_number, f"invalid JSON ({error.msg} at column {error.colno})")
            continue
        if not isinstance(record, dict):
            bad_lines.add(line_number, f"expected a JSON object, found {type(record).__name__}")
            continue
        if REQUEST_TEXT_KEY in record:
            instances = record.pop(REQUEST_TEXT_KEY)
            if not isinstance(instances, list) or len(instances) != 1 or not isinstance(instances[0], (str, type(None))):
                bad_lines.add(line_number, f"{REQUEST_TEXT_KEY!r} must be a list of one string")
                continue
            record[TEXT_COLUMN] = instances[0]
        records.append((line_number, record))

    try:
        return pa.Table.from_pylist([record for _, record in records]), [line_number for line_number, _ in records]
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise LoadError(
            f"Cannot build columns from {path}: {error}. A field has values of different types on different lines; "
            f"make each field one type."
        ) from error


def _parse_partition_dates(
    path: Path, data: pa.Table, partition_column: str, bad_lines: BadLines, line_numbers: list[int] | None
) -> pa.Table:
    import pyarrow as pa
    import pyarrow.compute as pc

    column = data.column(partition_column)
    if pa.types.is_date32(column.type):
        dates = column
    elif pa.types.is_date64(column.type) or pa.types.is_timestamp(column.type):
        dates = column.cast(pa.date32())
    elif pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        # Each distinct value is parsed once, because a file contains few distinct days.
        parsed = {}
        for value in pc.unique(column).to_pylist():
            try:
                parsed[value] = dt.date.fromisoformat(value.strip()) if value is not None else None
            except ValueError:
                parsed[value] = None
        dates = pa.array([parsed[value] for value in column.to_pylist()], type=pa.date32())
    else:
        raise LoadError(
            f"Partition column {partition_column!r} of {path} has type {column.type}; expected dates as YYYY-MM-DD."
        )

    invalid = pc.is_null(dates)
    if pc.any(invalid).as_py():
        for index in pc.indices_nonzero(invalid).to_pylist():
            value = column[index].as_py()
            if line_numbers is None:
                # Parquet has no lines, and CSV with quoted values may span lines: the row number is reported.
                bad_lines.add(0, f"row {index + 1}: {partition_column} {value!r} is not a date (expected YYYY-MM-DD)")
            else:
                bad_lines.add(line_numbers[index], f"{partition_column} {value!r} is not a date (expected YYYY-MM-DD)")
        keep = pc.invert(invalid)
        data = data.filter(keep)
        dates = dates.filter(keep)
    return data.set_column(data.schema.get_field_index(partition_column), partition_column, dates)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``load`` command's arguments to ``parser``."""
    parser.add_argument("file", type=Path, help="Parquet, CSV/TSV (with a header) or JSON lines file to load")
    parser.add_argument("--table", required=True, help="target table as project.dataset.table")
    parser.add_argument("--partition-column", required=True, help="DATE column that partitions the table by day")
    parser.add_argument("--format", choices=FORMATS, dest="file_format", help="file format; default: from the extension")
    parser.add_argument("--date", type=dt.date.fromisoformat, help="load only this day (YYYY-MM-DD), replacing its partition")
    parser.add_argument(
        "--max-bad-lines", type=int, default=0, help="number of malformed lines to skip and report before failing (default 0)"
    )
    target = parser.add_mutually_exclusive_group()
    target.add_argument(
        "--conn-id", default=DEFAULT_WAREHOUSE_CONN_ID, help="Airflow connection of the warehouse (default %(default)s)"
    )
    target.add_argument("--database", type=Path, help="embedded DuckDB database file to load into, instead of a connection")


def run_command(args: argparse.Namespace) -> int:
    """Run ``load`` with parsed arguments; return the exit status."""
    from textclf.warehouse import WarehouseError, get_warehouse

    try:
        table = TableRef.parse(args.table)
        if args.database is not None:
            from textclf.warehouse.embedded import EmbeddedWarehouse

            warehouse = EmbeddedWarehouse(args.database)
        else:
            warehouse = get_warehouse(args.conn_id)
        with warehouse:
            rows_per_day = load_file(
                args.file,
                warehouse=warehouse,
                table=table,
                partition_column=args.partition_column,
                file_format=args.file_format,
                date=args.date,
                max_bad_lines=args.max_bad_lines,
            )
    except (LoadError, WarehouseError, InvalidIdentifierError) as error:
        print(f"textclf load: {error}", file=sys.stderr)
        return 1
    total = sum(rows_per_day.values())
    print(f"Loaded {total} rows into {table}: {len(rows_per_day)} day(s)")
    for day, rows in rows_per_day.items():
        print(f"  {day}: {rows}")
    return 0
