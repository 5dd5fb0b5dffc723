-- Data checks over one day of the source table and over the labelled examples before it.
-- The check operator compares each figure with its configured threshold.
WITH
  source_day AS (
    SELECT
      {% for column in textclf.id_columns %}{{ column }},
      {% endfor %}{{ textclf.text_column }} AS text
    FROM {{ textclf.source }}
    WHERE {{ textclf.source_date_column }} = @run_date
  ),

  duplicate_ids AS (
    SELECT COUNT(*) AS id_count
    FROM source_day
    GROUP BY {{ textclf.id_columns | join(', ') }}
    HAVING COUNT(*) > 1
  )

SELECT
  (SELECT COUNT(*) FROM source_day) AS row_count,
  (SELECT COUNTIF(text IS NULL OR TRIM(text) = '') FROM source_day) AS blank_text_count,
  (SELECT COUNT(*) FROM duplicate_ids) AS duplicate_id_count,
  (SELECT COALESCE(SUM(id_count), 0) FROM duplicate_ids) AS duplicate_row_count,
  {% if textclf.label_column %}
  {% import 'labels.sql' as labels %}
  (
    SELECT COUNT(*)
    FROM {{ textclf.source }}
    WHERE {{ textclf.source_date_column }} < @run_date
      AND {{ labels.label_expression(textclf.label_column) }} IS NOT NULL
  ) AS training_example_count
  {% else %}
  CAST(NULL AS INT64) AS training_example_count
  {% endif %}
