-- One summary row for the run's day, written into that day's partition of the report table.
-- Class shares are compared with the seven days before the run's day.
WITH
  day_predictions AS (
    SELECT predicted_label, predicted_probability, actual_label
    FROM {{ textclf.predictions }}
    WHERE {{ textclf.result_date_column }} = @run_date
  ),

  day_totals AS (
    SELECT
      COUNT(*) AS rows_predicted,
      AVG(predicted_probability) AS mean_probability,
      SAFE_DIVIDE(COUNTIF(predicted_probability < @low_confidence_threshold), COUNT(*)) AS low_confidence_share,
      COUNTIF(actual_label IS NOT NULL) AS labelled_rows,
      SAFE_DIVIDE(
        COUNTIF(actual_label IS NOT NULL AND actual_label = predicted_label),
        COUNTIF(actual_label IS NOT NULL)
      ) AS accuracy
    FROM day_predictions
  ),

  source_totals AS (
    SELECT COUNT(*) AS source_rows
    FROM {{ textclf.source }}
    WHERE {{ textclf.source_date_column }} = @run_date
  ),

  day_counts AS (
    SELECT predicted_label AS label, COUNT(*) AS row_count
    FROM day_predictions
    GROUP BY predicted_label
  ),

  trailing_counts AS (
    SELECT predicted_label AS label, COUNT(*) AS row_count
    FROM {{ textclf.predictions }}
    WHERE {{ textclf.result_date_column }} BETWEEN DATE_SUB(@run_date, INTERVAL 7 DAY) AND DATE_SUB(@run_date, INTERVAL 1 DAY)
    GROUP BY predicted_label
  ),

  class_shares AS (
    SELECT
      COALESCE(day_counts.label, trailing_counts.label) AS label,
      SAFE_DIVIDE(COALESCE(day_counts.row_count, 0), (SELECT SUM(row_count) FROM day_counts)) AS share,
      SAFE_DIVIDE(COALESCE(trailing_counts.row_count, 0), (SELECT SUM(row_count) FROM trailing_counts)) AS trailing_share
    FROM day_counts
    FULL OUTER JOIN trailing_counts ON day_counts.label = trailing_counts.label
  )

SELECT
  @run_date AS {{ textclf.result_date_column }},
  source_totals.source_rows,
  day_totals.rows_predicted,
  source_totals.source_rows - day_totals.rows_predicted AS rows_excluded,
  day_totals.mean_probability,
  day_totals.low_confidence_share,
  day_totals.labelled_rows,
  day_totals.accuracy,
  (
    SELECT ARRAY_AGG(
      STRUCT(label, share, trailing_share, share - trailing_share AS share_change)
      ORDER BY label
    )
    FROM class_shares
  ) AS class_shares,
  @model_version AS model_version,
  CURRENT_TIMESTAMP() AS reported_at
FROM day_totals
CROSS JOIN source_totals
