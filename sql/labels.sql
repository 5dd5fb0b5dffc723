{#-
  The true label of a source row, the one place that defines it.

  Training reads labelled examples through this macro and the report measures accuracy with it.
  Change the CASE expression to fit your own data; rows for which it returns NULL are left out of
  training. The default follows the NSMC convention: ratings 1-4 are negative, 9-10 positive, and
  5-8 are left out.
-#}
{% macro label_expression(column) -%}
CASE
      WHEN {{ column }} BETWEEN 1 AND 4 THEN 'negative'
      WHEN {{ column }} BETWEEN 9 AND 10 THEN 'positive'
    END
{%- endmacro %}
