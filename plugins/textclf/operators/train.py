"""The train step: fit the classifier on labelled examples before the run's day and store it."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException

from textclf.operators.base import WarehouseOperator
from textclf.store import METRICS_FILE, get_model_store

if TYPE_CHECKING:
    from airflow.sdk import Context

    from textclf.store import ModelStore


class TrainModelOperator(WarehouseOperator):
    """Train the text classifier on examples dated strictly before the run's day.

    The examples come from ``sql`` through the warehouse. Training runs in a subprocess (so
    TensorFlow's memory leaves with it) or, with ``training_backend = "vertex"``, as a Vertex AI
    custom job. The SavedModel and its metrics go to the model store as version ``YYYYMMDD`` of the
    run's day. With the run param ``retrain`` off, or without a ``label_column`` to train on, the
    newest stored version up to the run's day is reused instead.

    :param config: the pipeline configuration.
    :param sql: the training examples query (templated); defaults to ``training_examples.sql``.
    """

    ui_color = "#fdf0e0"

    def __init__(self, *, sql: str = "training_examples.sql", **kwargs: Any) -> None:
        super().__init__(sql=sql, **kwargs)
        self._process: subprocess.Popen[str] | None = None

    def execute_step(self, context: Context, run_day: dt.date) -> dict[str, Any]:
        config = self.config
        version = run_day.strftime("%Y%m%d")
        store = get_model_store(config.resolved_store_uri, gcp_conn_id=config.gcp_conn_id)

        if not (context.get("params") or {}).get("retrain", True):
            return self._reuse_model(store, version)
        if config.label_column is None:
            # A source without labels cannot train a model, so each run serves the newest stored one.
            self.log.info("`label_column` is not set, so there is nothing to train on: reusing a stored model")
            return self._reuse_model(store, version)
        if config.training_backend == "vertex":
            return self._train_on_vertex(context, store, version, run_day)

        with self.get_warehouse(context) as warehouse:
            examples = warehouse.query(self.sql, {"run_date": run_day})
        self.log.info("Read %d training examples dated before %s", examples.num_rows, run_day)
        if examples.num_rows < config.min_training_examples:
            raise AirflowFailException(
                f"Only {examples.num_rows} labelled examples before {run_day}, below min_training_examples "
                f"{config.min_training_examples}. Load more history or lower min_training_examples."
            )

        with tempfile.TemporaryDirectory(prefix="textclf-train-") as workdir:
            examples_path = Path(workdir) / "examples.parquet"
            _write_parquet(examples, examples_path)
            del examples
            version_dir = Path(workdir) / version
            self._run_training_subprocess(examples_path, version_dir)
            metrics = json.loads((version_dir / METRICS_FILE).read_text(encoding="utf-8"))
            uri = store.publish(version_dir, version)

        counts = metrics.get("example_counts") or {}
        self.log.info(
            "Stored model version %s at %s: %s training and %s validation examples, validation balanced "
            "accuracy %s, %s bytes",
            version,
            uri,
            counts.get("train"),
            counts.get("validation"),
            metrics.get("balanced_accuracy"),
            metrics.get("model_bytes"),
        )
        return {
            "model_version": version,
            "model_uri": uri,
            "retrained": True,
            "training_examples": counts.get("train"),
            "validation_balanced_accuracy": metrics.get("balanced_accuracy"),
        }

    def _reuse_model(self, store: ModelStore, version: str) -> dict[str, Any]:
        # Versions are run days as YYYYMMDD, so "up to the run's day" is a string comparison.
        next_day = (dt.datetime.strptime(version, "%Y%m%d") + dt.timedelta(days=1)).strftime("%Y%m%d")
        latest = store.latest_version(before=next_day)
        if latest is None:
            raise AirflowFailException(
                f"Retraining is off, but the model store {store.root} has no complete model version up to "
                f"{version}. Trigger the run with retrain on to train one."
            )
        self.log.info("Retraining is off: reusing model version %s for day %s", latest, version)
        return {"model_version": latest, "model_uri": store.version_uri(latest), "retrained": False}

    def _run_training_subprocess(self, examples_path: Path, version_dir: Path) -> None:
        command = [
            sys.executable,
            "-m",
            "textclf",
            "train",
            "--examples",
            str(examples_path),
            "--output-dir",
            str(version_dir),
            "--max-epochs",
            str(self.config.max_epochs),
        ]
        # The subprocess imports textclf from the same folder as this task, which on Airflow is the
        # plugins folder and need not be on the subprocess's default path.
        package_root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))

        self.log.info("Starting training: %s", " ".join(command))
        tail: deque[str] = deque(maxlen=30)
        self._process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, bufsize=1
        )
        assert self._process.stdout is not None
        for line in self._process.stdout:
            line = line.rstrip()
            tail.append(line)
            if " INFO " in line or "ERROR" in line or "Error" in line:
                self.log.info("train: %s", line)
        returncode = self._process.wait()
        self._process = None
        if returncode != 0:
            raise AirflowFailException(
                f"Training failed with exit code {returncode}. Last output:\n" + "\n".join(tail)
            )

    def _train_on_vertex(self, context: Context, store: ModelStore, version: str, run_day: dt.date) -> dict[str, Any]:
        from textclf.vertex import train_version_on_vertex

        uri = train_version_on_vertex(
            config=self.config,
            store=store,
            version=version,
            examples_sql=self.sql,
            run_day=run_day,
            labels={"dag_id": self.dag_id, "task_id": self.task_id},
            on_job_created=self._remember_vertex_job,
        )
        return {"model_version": version, "model_uri": uri, "retrained": True}

    def _remember_vertex_job(self, cancel: Any) -> None:
        self._cancel_vertex_job = cancel

    def on_kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self.log.info("Stopping the training subprocess %d", self._process.pid)
            self._process.kill()
        cancel = getattr(self, "_cancel_vertex_job", None)
        if cancel is not None:
            cancel()


def _write_parquet(table: Any, path: Path) -> None:
    import pyarrow.parquet as pq

    pq.write_table(table, path)
