-- Predictions for one day of the source table, written into that day's partition of the
-- predictions table. ML.PREDICT passes the id columns and the true label through unchanged and
-- adds the model's outputs: predicted_label, predicted_probability and class_probabilities.
{% import 'labels.sql' as labels %}
SELECT
  {% for column in textclf.id_columns %}{{ column }},
  {% endfor %}predicted_label,
  predicted_probability,
  class_probabilities,
  actual_label,
  @model_version AS model_version,
  CURRENT_TIMESTAMP() AS predicted_at,
  @run_date AS {{ textclf.result_date_column }}
FROM ML.PREDICT(
  MODEL {{ textclf.model }},
  (
    SELECT
      {% for column in textclf.id_columns %}{{ column }},
      {% endfor %}
      {%- if textclf.null_text_policy == 'predict' %}
      -- NULL text is scored as an empty string, so every source row gets a prediction.
      COALESCE({{ textclf.text_column }}, '') AS text,
      {%- else %}
      {{ textclf.text_column }} AS text,
      {%- endif %}
      {% if textclf.label_column -%}
      {{ labels.label_expression(textclf.label_column) }} AS actual_label
      {%- else -%}
      CAST(NULL AS STRING) AS actual_label
      {%- endif %}
    FROM {{ textclf.source }}
    WHERE {{ textclf.source_date_column }} = @run_date
    {%- if textclf.null_text_policy == 'exclude' %}
      -- NULL and blank texts are left out; the report counts them as excluded rows.
      AND {{ textclf.text_column }} IS NOT NULL
      AND TRIM({{ textclf.text_column }}) != ''
    {%- endif %}
  )
)
