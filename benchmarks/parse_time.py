"""Time how long each DAG file in ``dags/`` takes to parse, as Airflow's DAG processor pays it.

Each measurement runs in a fresh interpreter. It first imports what the DAG processor has loaded
before it parses a file: ``airflow.sdk`` and ``airflow.dag_processing.processor``, the module that
parses DAG files (Airflow 3). It then times the execution of the DAG file alone, and lists the
modules that the DAG file imported. Run from the repository root::

    .venv/bin/python benchmarks/parse_time.py [--repeat N]

Target: at most 0.3 s per file, and no tensorflow, duckdb, pandas or google.cloud.bigquery among
the imported modules. A file over the target gets the cost of each of our modules from
``python -X importtime``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO_ROOT, SCRATCH_DIR, emit_figure, median, python_env  # noqa: E402

DAG_FOLDER = REPO_ROOT / "dags"
TARGET_SECONDS = 0.3
FORBIDDEN_MODULES = ("tensorflow", "duckdb", "pandas", "google.cloud.bigquery")
PRE_IMPORTS = ("airflow.sdk", "airflow.dag_processing.processor")
OUR_MODULE_PREFIXES = ("textclf",)

# Runs in the fresh interpreter: pre-import Airflow, then execute the DAG file as DagBag does.
_CHILD = r"""
import importlib, importlib.util, json, sys, time
started = time.perf_counter()
for name in {pre_imports!r}:
    importlib.import_module(name)
airflow_seconds = time.perf_counter() - started
before = set(sys.modules)
dag_started = time.perf_counter()
spec = importlib.util.spec_from_file_location("parse_time_dag", {dag_file!r})
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)
dag_seconds = time.perf_counter() - dag_started
imported = sorted(set(sys.modules) - before)
print(json.dumps({{"airflow_seconds": airflow_seconds, "dag_seconds": dag_seconds, "imported": imported}}))
"""


def measure_once(dag_file: Path) -> dict:
    """Parse ``dag_file`` in a fresh interpreter and return its timings and imported modules."""
    code = _CHILD.format(pre_imports=PRE_IMPORTS, dag_file=str(dag_file))
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=parse_env(), cwd=REPO_ROOT, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"Parsing {dag_file} failed in a fresh interpreter:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def parse_env() -> dict[str, str]:
    env = python_env()
    env["AIRFLOW_HOME"] = str(SCRATCH_DIR / "airflow")
    env["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    env.pop("TEXTCLF_CONFIG", None)
    return env


def import_costs(dag_file: Path) -> list[tuple[str, int, int]]:
    """Return (module, self microseconds, cumulative microseconds) of our modules from ``-X importtime``."""
    code = "import importlib; [importlib.import_module(n) for n in {pre!r}]; exec(open({path!r}).read())".format(
        pre=PRE_IMPORTS, path=str(dag_file)
    )
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, env=parse_env(), check=False
    )
    costs = []
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        parts = [part.strip() for part in line[len("import time:") :].split("|")]
        if len(parts) != 3 or not parts[0].isdigit():
            continue
        name = parts[2].strip()
        if name.startswith(OUR_MODULE_PREFIXES):
            costs.append((name, int(parts[0]), int(parts[1])))
    return costs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="fresh interpreters per DAG file; the median is reported")
    args = parser.parse_args()

    dag_files = sorted(DAG_FOLDER.glob("*.py"))
    if not dag_files:
        print(f"skipped: no DAG files in {DAG_FOLDER}")
        return 0
    print(f"pre-imported before each DAG file: {', '.join(PRE_IMPORTS)}")

    for dag_file in dag_files:
        runs = [measure_once(dag_file) for _ in range(args.repeat)]
        dag_seconds = median([run["dag_seconds"] for run in runs])
        total_seconds = median([run["airflow_seconds"] + run["dag_seconds"] for run in runs])
        imported = runs[0]["imported"]
        forbidden = sorted(
            name for name in imported if any(name == root or name.startswith(root + ".") for root in FORBIDDEN_MODULES)
        )
        ours = [name for name in imported if name.startswith(OUR_MODULE_PREFIXES)]
        each_run = ", ".join(f"{run['dag_seconds']:.3f}" for run in runs)
        print(
            f"{dag_file.name}: DAG file {dag_seconds:.3f} s (runs: {each_run}), "
            f"with the Airflow import {total_seconds:.3f} s; {len(imported)} modules imported by the DAG file"
        )
        print(f"  our modules imported: {', '.join(ours) or 'none'}")
        print(f"  forbidden modules imported: {', '.join(forbidden) or 'none'}")

        if dag_seconds > TARGET_SECONDS:
            print(f"  {dag_file.name} is over {TARGET_SECONDS} s; -X importtime of our modules (self / cumulative ms):")
            for name, self_us, cumulative_us in import_costs(dag_file):
                print(f"    {name:<40} {self_us / 1000:8.1f} {cumulative_us / 1000:8.1f}")

        emit_figure(
            f"parse {dag_file.name}",
            round(dag_seconds, 3),
            "s",
            f"<= {TARGET_SECONDS} s",
            dag_seconds <= TARGET_SECONDS,
            note=f"{total_seconds:.2f} s with the Airflow import",
        )
        emit_figure(
            f"heavy imports by {dag_file.name}",
            len(forbidden),
            "modules",
            "0",
            not forbidden,
            note=", ".join(forbidden) or "no tensorflow, duckdb, pandas, google.cloud.bigquery",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
