"""textclf: a daily text-classification pipeline for Airflow, BigQuery ML and an embedded DuckDB default.

Importing this package is cheap: TensorFlow, DuckDB, pandas and the Google clients load only
inside the modules and functions that tasks call.
"""

from __future__ import annotations

__version__ = "0.1.0"
