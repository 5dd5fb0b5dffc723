"""Rendering of the daily report and the slow-task flags."""

from __future__ import annotations

import datetime as dt
import json

from textclf.operators.report import flag_slow_tasks
from textclf.report import render_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_flag_slow_tasks_over_twice_median():
    trailing = [
        {"task_id": "predict", "duration_seconds": 10.0},
        {"task_id": "predict", "duration_seconds": 12.0},
        {"task_id": "predict", "duration_seconds": 100.0},
        {"task_id": "train_model", "duration_seconds": 60.0},
    ]

    slow = flag_slow_tasks({"predict": 25.0, "train_model": 119.0, "report": 3.0}, trailing)

    assert slow == [{"task_id": "predict", "duration_seconds": 25.0, "median_seconds": 12.0}]


def test_flag_slow_tasks_without_history():
    assert flag_slow_tasks({"predict": 1000.0}, []) == []


def test_render_report_writes_markdown_and_plots():
    summary = {
        "source_rows": 120,
        "rows_predicted": 118,
        "rows_excluded": 2,
        "mean_probability": 0.91,
        "low_confidence_share": 0.05,
        "labelled_rows": 100,
        "accuracy": 0.9,
        "class_shares": [
            {"label": "negative", "share": 0.25, "trailing_share": 0.3, "share_change": -0.05},
            {"label": "positive", "share": 0.75, "trailing_share": None, "share_change": None},
        ],
        "model_version": "20141201",
    }
    history = [
        {"run_date": dt.date(2014, 11, 30), "label": "positive", "share": 0.7},
        {"run_date": dt.date(2014, 12, 1), "label": "positive", "share": 0.75},
    ]

    files = render_report(
        run_day=dt.date(2014, 12, 1),
        summary=summary,
        history=history,
        histogram=[{"bucket": 19, "row_count": 100}, {"bucket": 10, "row_count": 18}],
        histogram_buckets=20,
        durations={"predict": 30.0, "report": 2.0},
        trailing_durations=[{"task_id": "predict", "duration_seconds": 10.0}],
        slow_tasks=[{"task_id": "predict", "duration_seconds": 30.0, "median_seconds": 10.0}],
        low_confidence_threshold=0.6,
    )

    markdown = files["report.md"].decode("utf-8")
    assert sorted(files) == ["class_shares.png", "probability_histogram.png", "report.md", "summary.json", "task_durations.png"]
    assert "# textclf daily report: 2014-12-01" in markdown
    assert "| rows predicted | 118 |" in markdown
    assert "| negative | 25.0 % | 30.0 % | -5.0 pt |" in markdown
    assert "| positive | 75.0 % | n/a | n/a |" in markdown
    assert "| predict (slow) | 30.0 |" in markdown
    assert "more than twice its trailing median of 10.0 s" in markdown
    for name in ("class_shares.png", "probability_histogram.png", "task_durations.png"):
        assert files[name].startswith(PNG_SIGNATURE)
    assert json.loads(files["summary.json"])["rows_predicted"] == 118
