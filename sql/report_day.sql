-- The report row of the run's day, as the report step wrote it.
SELECT *
FROM {{ textclf.report }}
WHERE {{ textclf.result_date_column }} = @run_date
