-- Predicted probabilities of the run's day in buckets of equal width, for the report's histogram.
SELECT
  LEAST(CAST(FLOOR(predicted_probability * @bucket_count) AS INT64), @bucket_count - 1) AS bucket,
  COUNT(*) AS row_count
FROM {{ textclf.predictions }}
WHERE {{ textclf.result_date_column }} = @run_date
GROUP BY bucket
ORDER BY bucket
