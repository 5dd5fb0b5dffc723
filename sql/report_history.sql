-- Class shares of the report rows up to the run's day, for the report's trend plot.
SELECT
  {{ textclf.result_date_column }} AS run_date,
  class_share.label AS label,
  class_share.share AS share
FROM {{ textclf.report }},
  UNNEST(class_shares) AS class_share
WHERE {{ textclf.result_date_column }} BETWEEN DATE_SUB(@run_date, INTERVAL @history_days DAY) AND @run_date
ORDER BY run_date, label
