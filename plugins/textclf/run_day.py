"""Which day a DAG run processes.

The DAG's schedule is daily with data intervals in the configured timezone, so the run for day D
has the interval [D 00:00, D+1 00:00) and starts once D has ended. The day of a run is, in order:

1. the ``run_date`` param, when a run sets it (``YYYY-MM-DD``, from the trigger form or ``--conf``);
2. the start of the run's data interval, in the configured timezone (scheduled runs and backfills);
3. the day before the run was queued, in the configured timezone (a manual run with no logical
   date processes the latest day that has ended).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo


def parse_day(value: str | dt.date, *, what: str = "run_date") -> dt.date:
    """Parse a ``YYYY-MM-DD`` string (or pass a date through), naming ``what`` when it is invalid."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value).strip())
    except ValueError:
        raise ValueError(f"Invalid `{what}` {value!r}: expected a date as YYYY-MM-DD, e.g. '2014-12-01'.") from None


def resolve_run_day(context: Mapping[str, Any], timezone: str) -> dt.date:
    """Return the day that the task instance in ``context`` processes (see the module docstring)."""
    params = context.get("params") or {}
    if params.get("run_date"):
        return parse_day(params["run_date"])

    zone = ZoneInfo(timezone)
    interval_start = context.get("data_interval_start")
    if interval_start is not None:
        return interval_start.astimezone(zone).date()

    dag_run = context.get("dag_run")
    queued = getattr(dag_run, "run_after", None) or dt.datetime.now(dt.timezone.utc)
    return queued.astimezone(zone).date() - dt.timedelta(days=1)
