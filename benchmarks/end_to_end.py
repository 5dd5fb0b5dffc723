"""Time the whole daily run on the embedded warehouse for one NSMC day, as ``textclf demo`` runs it.

Runs ``python -m textclf demo --data ../shared/data/nsmc/reviews_2003_2014.parquet --date
2014-12-01 --home .textclf/bench/end_to_end`` in a subprocess, in a fresh home each time: it loads
the file, trains on every labelled review before the day, imports the model, predicts the day and
writes the report. Prints the wall time, the load time and the time of each task. Target: at most
5 minutes of wall time. Run from the repository root::

    .venv/bin/python benchmarks/end_to_end.py
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DATA_FILE, REPO_ROOT, SCRATCH_DIR, data_available, emit_figure, python_env  # noqa: E402

RUN_DAY = "2014-12-01"
START_DATE = "2003-01-01"
HOME = SCRATCH_DIR / "end_to_end"
TARGET_SECONDS = 300
LOAD_LINE = re.compile(r"^Loaded (\d+) rows .* in ([\d.]+) s$")
TASK_SECONDS_LINE = re.compile(r"^\s+seconds (\S+)\s+([\d.]+)$")
TASK_STATE_LINE = re.compile(r"^\s+task (\S+)\s+(\S+)$")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--date", default=RUN_DAY, help="day to run, YYYY-MM-DD")
    args = parser.parse_args()
    if not data_available():
        return 0

    shutil.rmtree(HOME, ignore_errors=True)
    HOME.mkdir(parents=True)
    env = python_env()
    # The demo keeps an Airflow home or connection already set, so clear them to run in the fresh home.
    for name in ("AIRFLOW_HOME", "AIRFLOW_CONN_TEXTCLF_WAREHOUSE", "TEXTCLF_HOME"):
        env.pop(name, None)
    # The default start_date (2026-01-01) is after the NSMC days, and Airflow creates no task
    # instances for a run dated before the DAG's start_date, so this configuration moves it back.
    config_file = HOME / "textclf.json"
    config_file.write_text(json.dumps({"start_date": START_DATE}), encoding="utf-8")
    env["TEXTCLF_CONFIG"] = str(config_file)
    print(f"configuration {config_file}: {config_file.read_text(encoding='utf-8')}")
    command = [sys.executable, "-m", "textclf", "demo", "--data", str(DATA_FILE), "--date", args.date, "--home", str(HOME)]
    print(f"running: {' '.join(command)}")
    log_file = HOME.with_suffix(".log")
    started = time.perf_counter()
    with log_file.open("w", encoding="utf-8") as log:
        result = subprocess.run(command, stdout=subprocess.PIPE, stderr=log, text=True, env=env, cwd=REPO_ROOT, check=False)
    seconds = time.perf_counter() - started

    load_seconds = None
    task_seconds: dict[str, float] = {}
    task_states: dict[str, str] = {}
    for line in result.stdout.splitlines():
        if match := LOAD_LINE.match(line):
            load_seconds = float(match.group(2))
            print(f"load: {int(match.group(1)):,} rows in {load_seconds:.1f} s")
        elif match := TASK_SECONDS_LINE.match(line):
            task_seconds[match.group(1)] = float(match.group(2))
        elif match := TASK_STATE_LINE.match(line):
            task_states[match.group(1)] = match.group(2)
    for task_id, state in task_states.items():
        duration = f"{task_seconds[task_id]:7.1f} s" if task_id in task_seconds else "      -  "
        print(f"task {task_id:<18} {duration}  {state}")
    print(f"wall time {seconds:.1f} s (the demo's log is in {log_file})")

    succeeded = bool(task_states) and all(state == "success" for state in task_states.values())
    if result.returncode != 0:
        print(f"the demo exited with status {result.returncode}; the end of its error output:")
        print("\n".join(log_file.read_text(encoding="utf-8").splitlines()[-6:]))
    if not succeeded:
        print(f"not every task succeeded; the demo's output:\n{result.stdout[-3000:]}")
    emit_figure(
        f"end to end, NSMC day {args.date}",
        round(seconds, 1),
        "s",
        f"<= {TARGET_SECONDS} s",
        bool(succeeded) and seconds <= TARGET_SECONDS,
        note=f"load {load_seconds:.1f} s" if load_seconds is not None else "load time not printed",
    )
    for task_id, duration in task_seconds.items():
        emit_figure(f"  task {task_id}", round(duration, 1), "s", "", None)
    return 0 if succeeded else 1


if __name__ == "__main__":
    os.chdir(REPO_ROOT)
    sys.exit(main())
