"""Stage `evaluate`: test-set metrics, the confusion matrix, and the exact McNemar test
that register's gates use. `config` (the `evaluate` section), `metrics`, `plots`, `stats`.
"""
