# syntax=docker/dockerfile:1
# The MLflow tracking server of charts/mlflow: mlflow at the project's pin, boto3 for the S3
# artifact store, psycopg2 for the Postgres backend store.
# Build from the repository root: make images  (or docker build -f images/mlflow.Dockerfile .)
ARG PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91

FROM ${PYTHON_IMAGE} AS deps
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY constraints.txt /tmp/constraints.txt
RUN pip install --constraint /tmp/constraints.txt mlflow boto3 psycopg2-binary==2.9.10

FROM ${PYTHON_IMAGE}
COPY --from=deps /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HOME=/tmp
USER 10001:10001
WORKDIR /tmp
EXPOSE 5000
ENTRYPOINT ["mlflow"]
CMD ["server", "--host=0.0.0.0", "--port=5000"]
