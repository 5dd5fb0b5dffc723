"""Which day a DAG run processes."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest

from textclf.run_day import parse_day, resolve_run_day

SEOUL = "Asia/Seoul"


def test_param_run_date_wins():
    context = {"params": {"run_date": "2014-12-01"}, "data_interval_start": dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)}

    assert resolve_run_day(context, SEOUL) == dt.date(2014, 12, 1)


def test_data_interval_start_in_timezone():
    # 2014-11-30 15:00 UTC is 2014-12-01 00:00 in Seoul: the interval of day 2014-12-01.
    start = dt.datetime(2014, 11, 30, 15, 0, tzinfo=dt.timezone.utc)

    assert resolve_run_day({"params": {}, "data_interval_start": start}, SEOUL) == dt.date(2014, 12, 1)
    assert resolve_run_day({"params": {}, "data_interval_start": start}, "UTC") == dt.date(2014, 11, 30)


def test_manual_run_without_logical_date_takes_previous_day():
    dag_run = SimpleNamespace(run_after=dt.datetime(2014, 12, 2, 3, 0, tzinfo=dt.timezone.utc))

    day = resolve_run_day({"params": {"run_date": None}, "data_interval_start": None, "dag_run": dag_run}, SEOUL)

    assert day == dt.date(2014, 12, 1)


@pytest.mark.parametrize("value", ["2014-13-01", "yesterday", "2014/12/01", "'; DROP TABLE x; --"])
def test_invalid_run_date_is_named(value):
    with pytest.raises(ValueError, match="Invalid `run_date`"):
        parse_day(value)
