"""Run every benchmark and print one table of each figure, its target and whether it is met.

Each benchmark runs as its own subprocess, and its output is shown as it runs. The figures are
collected from the ``FIGURE {json}`` lines of our scripts and from the figure lines of
``train_nsmc.py``. Run from the repository root::

    .venv/bin/python benchmarks/run_all.py [--only NAME]

The benchmarks that read the NSMC reviews print a "skipped" line and exit 0 when
``../shared/data/nsmc`` is absent; the parse-time benchmark needs no data.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import FIGURE_MARKER, REPO_ROOT, SCRATCH_DIR, python_env  # noqa: E402

BENCHMARK_DIR = Path(__file__).resolve().parent
# Name, script and arguments, in the order they run. train_nsmc.py comes last: it trains its own model.
BENCHMARKS = {
    "parse_time": ["parse_time.py"],
    "predict": ["predict.py"],
    "end_to_end": ["end_to_end.py"],
    "train_nsmc": ["train_nsmc.py", "--output-dir", str(SCRATCH_DIR / "train_nsmc")],
}
# A figure line of train_nsmc.py: the name in 34 columns, the value, "target ...", then "met" or "NOT MET".
TRAIN_FIGURE_LINE = re.compile(r"^(?P<name>.{34}) +(?P<value>\S+)   target (?P<target>.+?) +(?P<met>met|NOT MET)$")


def run_benchmark(name: str) -> tuple[list[dict], int, float]:
    """Run one benchmark script, echo its output and return its figures, exit status and seconds."""
    script, *arguments = BENCHMARKS[name]
    command = [sys.executable, str(BENCHMARK_DIR / script), *arguments]
    print(f"\n=== {name}: {' '.join(command[1:])}", flush=True)
    figures = []
    started = time.perf_counter()
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL if name != "train_nsmc" else subprocess.STDOUT,
        text=True, env=python_env(), cwd=REPO_ROOT,
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            line = line.rstrip("\n")
            if line.startswith(FIGURE_MARKER):
                figure = json.loads(line[len(FIGURE_MARKER) :])
                figure["benchmark"] = name
                figures.append(figure)
                continue
            if name == "train_nsmc" and _is_log_line(line):
                continue
            print(line, flush=True)
            if name == "train_nsmc" and (match := TRAIN_FIGURE_LINE.match(line)):
                met = None if match["target"].strip() == "(none)" else match["met"] == "met"
                figures.append(
                    {
                        "benchmark": name,
                        "name": f"training: {match['name'].strip()}",
                        "value": match["value"],
                        "unit": "",
                        "target": match["target"].strip() if met is not None else "",
                        "met": met,
                        "note": "",
                    }
                )
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        print(f"{name} exited with status {process.returncode}", flush=True)
    return figures, process.returncode, seconds


def _is_log_line(line: str) -> bool:
    # Training logs (timestamped lines, TensorFlow's start-up messages) stay out of the record.
    return bool(re.match(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d|[IWE]\d{4} |WARNING: All log messages)", line))


def format_value(figure: dict) -> str:
    value = figure["value"]
    if isinstance(value, float):
        text = f"{value:,.3f}".rstrip("0").rstrip(".") if abs(value) < 100 else f"{value:,.1f}"
    elif isinstance(value, int):
        text = f"{value:,}"
    else:
        text = str(value)
    return f"{text} {figure['unit']}".strip()


def print_table(figures: list[dict], failures: dict[str, int]) -> None:
    rows = [("figure", "measured", "target", "met")]
    for figure in figures:
        if figure["met"] is None:
            met = "-"
        else:
            met = "yes" if figure["met"] else "NO"
        rows.append((figure["name"], format_value(figure), figure["target"] or "-", met))
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    print()
    print(f"benchmarks on {platform.node() or 'this machine'}: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"{dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}")
    for index, row in enumerate(rows):
        print("| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) + " |")
        if index == 0:
            print("| " + " | ".join("-" * width for width in widths) + " |")
    notes = [f"{figure['name']}: {figure['note']}" for figure in figures if figure.get("note")]
    if notes:
        print("\nnotes:")
        for note in notes:
            print(f"  {note}")
    for name, status in failures.items():
        print(f"benchmark {name} failed with exit status {status}; see its output above")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(BENCHMARKS), action="append", help="run only this benchmark (repeatable)")
    args = parser.parse_args()

    if not (REPO_ROOT.parent / "shared").is_dir():
        print("skipped: ../shared not found, so only the parse-time benchmark runs (it needs no data)")
    figures: list[dict] = []
    failures: dict[str, int] = {}
    started = time.perf_counter()
    for name in args.only or list(BENCHMARKS):
        benchmark_figures, status, seconds = run_benchmark(name)
        figures.extend(benchmark_figures)
        print(f"=== {name} took {seconds:.0f} s", flush=True)
        if status != 0:
            failures[name] = status
    print_table(figures, failures)
    print(f"\nall benchmarks took {time.perf_counter() - started:.0f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
