"""A team stack on loopback: PostgreSQL, an S3 stand-in (moto) and `mlflow server` (issue 12)."""
