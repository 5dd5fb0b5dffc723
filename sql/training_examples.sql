-- Labelled training examples strictly before the run's day, so that a backfill for an old day
-- never trains on later data.
{% import 'labels.sql' as labels %}
SELECT
  {{ textclf.text_column }} AS text,
  {{ labels.label_expression(textclf.label_column) }} AS label,
  {{ textclf.source_date_column }} AS example_date
FROM {{ textclf.source }}
WHERE {{ textclf.source_date_column }} < @run_date
  AND {{ labels.label_expression(textclf.label_column) }} IS NOT NULL
