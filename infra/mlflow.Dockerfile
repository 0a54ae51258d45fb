# MLflow server image for infra/compose/mlflow.yml: the official image + PostgreSQL driver + S3 client.
FROM ghcr.io/mlflow/mlflow:v3.17.2
RUN pip install --no-cache-dir psycopg2-binary boto3
EXPOSE 5000
