-- Task durations of the days before the run's day, for the trailing medians the report compares with.
SELECT
  {{ textclf.result_date_column }} AS run_date,
  task_id,
  duration_seconds
FROM {{ textclf.durations }}
WHERE {{ textclf.result_date_column }} BETWEEN DATE_SUB(@run_date, INTERVAL @history_days DAY) AND DATE_SUB(@run_date, INTERVAL 1 DAY)
ORDER BY run_date, task_id
