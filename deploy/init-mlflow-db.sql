-- The MLflow tracking server keeps its own database next to Prefect's.
CREATE DATABASE mlflow;
