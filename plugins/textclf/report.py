"""Rendering of the daily report: a Markdown page with PNG plots, and its figures as JSON."""

from __future__ import annotations

import datetime as dt
import io
import json
import statistics
from collections.abc import Sequence
from typing import Any

REPORT_FILE = "report.md"
SUMMARY_FILE = "summary.json"
CLASS_SHARES_PLOT = "class_shares.png"
HISTOGRAM_PLOT = "probability_histogram.png"
DURATIONS_PLOT = "task_durations.png"


def render_report(
    *,
    run_day: dt.date,
    summary: dict[str, Any],
    history: Sequence[dict[str, Any]],
    histogram: Sequence[dict[str, Any]],
    histogram_buckets: int,
    durations: dict[str, float],
    trailing_durations: Sequence[dict[str, Any]],
    slow_tasks: Sequence[dict[str, Any]],
    low_confidence_threshold: float,
) -> dict[str, bytes]:
    """Render the report of one day and return its files by name.

    :param run_day: the day the report covers.
    :param summary: the day's row of the report table.
    :param history: rows of ``run_date``, ``label`` and ``share`` for the recent days.
    :param histogram: rows of ``bucket`` and ``row_count`` of the day's predicted probabilities.
    :param histogram_buckets: the number of equal-width buckets between 0 and 1.
    :param durations: this run's duration per task id, in seconds.
    :param trailing_durations: earlier days' rows of ``run_date``, ``task_id`` and ``duration_seconds``.
    :param slow_tasks: the tasks flagged as slow, with ``task_id``, ``duration_seconds`` and ``median_seconds``.
    :param low_confidence_threshold: the probability under which a prediction counts as low confidence.
    """
    import matplotlib

    matplotlib.use("Agg")

    files = {
        CLASS_SHARES_PLOT: _plot_class_shares(history),
        HISTOGRAM_PLOT: _plot_histogram(histogram, histogram_buckets, low_confidence_threshold),
        DURATIONS_PLOT: _plot_durations(durations, trailing_durations),
    }
    files[REPORT_FILE] = _markdown(run_day, summary, durations, slow_tasks, low_confidence_threshold).encode("utf-8")
    files[SUMMARY_FILE] = json.dumps(
        {"run_date": run_day.isoformat(), **summary, "task_durations": durations, "slow_tasks": list(slow_tasks)},
        default=str,
        ensure_ascii=False,
        indent=2,
    ).encode("utf-8")
    return files


def _markdown(
    run_day: dt.date,
    summary: dict[str, Any],
    durations: dict[str, float],
    slow_tasks: Sequence[dict[str, Any]],
    low_confidence_threshold: float,
) -> str:
    lines = [
        f"# textclf daily report: {run_day.isoformat()}",
        "",
        f"Model version: `{summary.get('model_version')}`",
        "",
        "| figure | value |",
        "| --- | --- |",
        f"| source rows | {summary.get('source_rows')} |",
        f"| rows predicted | {summary.get('rows_predicted')} |",
        f"| rows excluded (NULL or blank text) | {summary.get('rows_excluded')} |",
        f"| mean probability | {_number(summary.get('mean_probability'))} |",
        f"| share under {low_confidence_threshold:g} probability | {_share(summary.get('low_confidence_share'))} |",
        f"| labelled rows | {summary.get('labelled_rows')} |",
        f"| accuracy on labelled rows | {_share(summary.get('accuracy'))} |",
        "",
        "## Class shares",
        "",
        "| class | share | trailing 7 days | change |",
        "| --- | --- | --- | --- |",
    ]
    for entry in summary.get("class_shares") or []:
        lines.append(
            f"| {entry['label']} | {_share(entry['share'])} | {_share(entry['trailing_share'])} "
            f"| {_change(entry['share_change'])} |"
        )
    lines += ["", f"![Class shares over recent days]({CLASS_SHARES_PLOT})", ""]
    lines += ["## Predicted probabilities", "", f"![Histogram of predicted probabilities]({HISTOGRAM_PLOT})", ""]
    lines += ["## Task durations", "", "| task | seconds |", "| --- | --- |"]
    slow_ids = {task["task_id"] for task in slow_tasks}
    for task_id, seconds in durations.items():
        flag = " (slow)" if task_id in slow_ids else ""
        lines.append(f"| {task_id}{flag} | {seconds:.1f} |")
    lines.append("")
    for task in slow_tasks:
        lines.append(
            f"**Slow task:** `{task['task_id']}` took {task['duration_seconds']:.1f} s, more than twice its "
            f"trailing median of {task['median_seconds']:.1f} s."
        )
    if slow_tasks:
        lines.append("")
    lines += [f"![Task durations]({DURATIONS_PLOT})", ""]
    return "\n".join(lines)


def _number(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _share(value: Any) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def _change(value: Any) -> str:
    return "n/a" if value is None else f"{100 * value:+.1f} pt"


def _png(figure: Any) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()


def _plot_class_shares(history: Sequence[dict[str, Any]]) -> bytes:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 3.5))
    series: dict[str, list[tuple[Any, float]]] = {}
    for row in history:
        series.setdefault(row["label"], []).append((row["run_date"], row["share"]))
    for label, points in sorted(series.items()):
        days, shares = zip(*sorted(points))
        axes.plot(days, shares, marker="o", label=str(label))
    days = sorted({day for points in series.values() for day, _ in points})
    if len(days) == 1:
        # One point would otherwise sit on an axis that matplotlib stretches over years.
        axes.set_xlim(days[0] - dt.timedelta(days=3), days[0] + dt.timedelta(days=3))
    axes.set_title("Share of predictions per class")
    axes.set_ylabel("share")
    axes.set_ylim(0, 1)
    if series:
        axes.legend()
    figure.autofmt_xdate()
    return _png(figure)


def _plot_histogram(histogram: Sequence[dict[str, Any]], buckets: int, threshold: float) -> bytes:
    import matplotlib.pyplot as plt

    counts = [0] * buckets
    for row in histogram:
        counts[int(row["bucket"])] = int(row["row_count"])
    figure, axes = plt.subplots(figsize=(7, 3.5))
    width = 1 / buckets
    axes.bar([i * width for i in range(buckets)], counts, width=width, align="edge", edgecolor="white")
    axes.axvline(threshold, color="tab:red", linestyle="--", label=f"low confidence < {threshold:g}")
    axes.set_title("Predicted probability of the chosen class")
    axes.set_xlabel("probability")
    axes.set_ylabel("rows")
    axes.set_xlim(0, 1)
    axes.legend()
    return _png(figure)


def _plot_durations(durations: dict[str, float], trailing: Sequence[dict[str, Any]]) -> bytes:
    import matplotlib.pyplot as plt

    history: dict[str, list[float]] = {}
    for row in trailing:
        history.setdefault(row["task_id"], []).append(float(row["duration_seconds"]))
    tasks = list(durations)
    figure, axes = plt.subplots(figsize=(7, 3.5))
    positions = range(len(tasks))
    axes.barh([p + 0.2 for p in positions], [durations[t] for t in tasks], height=0.4, label="this run")
    medians = [statistics.median(history[t]) if t in history else 0.0 for t in tasks]
    axes.barh([p - 0.2 for p in positions], medians, height=0.4, label="trailing median")
    axes.set_yticks(list(positions), tasks)
    axes.set_xlabel("seconds")
    axes.set_title("Task durations")
    axes.legend()
    return _png(figure)
