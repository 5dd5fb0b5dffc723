"""Airflow operators of the daily pipeline, one module per step.

Importing them costs only Airflow's task SDK and textclf's light modules; each operator imports
TensorFlow, DuckDB or the Google clients inside ``execute``.
"""

from __future__ import annotations

from textclf.operators.check import SourceDataCheckOperator
from textclf.operators.import_model import ImportModelOperator
from textclf.operators.predict import PredictOperator
from textclf.operators.report import ReportOperator
from textclf.operators.train import TrainModelOperator

__all__ = [
    "ImportModelOperator",
    "PredictOperator",
    "ReportOperator",
    "SourceDataCheckOperator",
    "TrainModelOperator",
]
