"""Training of the text classifier and its export as a SavedModel that BigQuery ML can import.

Nothing here imports Airflow: the code runs in an Airflow task's subprocess, from the command
line (``python -m textclf train``) or inside a Vertex AI custom job container. TensorFlow loads
only inside :mod:`textclf.training.model` and :mod:`textclf.training.train`.
"""

from __future__ import annotations
