"""Test set-up shared by every test module: an isolated Airflow home and textclf home."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Airflow reads its configuration when first imported, so these are set before any test module
# imports it. Each pytest session gets fresh, throw-away folders.
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="textclf-tests-"))
os.environ["AIRFLOW_HOME"] = str(_SESSION_DIR / "airflow")
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(Path(__file__).resolve().parents[1] / "dags")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
os.environ["TEXTCLF_HOME"] = str(_SESSION_DIR / "textclf")
os.environ.pop("TEXTCLF_CONFIG", None)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPOSITORY_DIR = Path(__file__).resolve().parents[1]
NSMC_PATH = REPOSITORY_DIR.parent / "shared" / "data" / "nsmc" / "reviews_2003_2014.parquet"
