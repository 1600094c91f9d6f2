# syntax=docker/dockerfile:1
# Ingest and validate: Python 3.11, Java 17, PySpark, the S3A connector (s3a:// with IRSA
# credentials through the web-identity provider), deepchecks; CPU torch (the project imports it).
# Build from the repository root: make images  (or docker build -f images/spark.Dockerfile .)
ARG PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91

FROM ${PYTHON_IMAGE} AS s3a
# Debian packages follow the base image's (digest-pinned) bookworm release; see .hadolint.yaml.
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends maven openjdk-17-jdk-headless \
    && rm -rf /var/lib/apt/lists/*
COPY images/spark/pom.xml /build/pom.xml
RUN mvn -B -q -C -f /build/pom.xml dependency:copy-dependencies -DincludeScope=runtime \
        -DoutputDirectory=/opt/s3a-jars

FROM ${PYTHON_IMAGE} AS deps
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml constraints.txt images/requirements.py ./
RUN python requirements.py pyproject.toml constraints.txt --group spark > /tmp/requirements.txt \
    && pip install --extra-index-url https://download.pytorch.org/whl/cpu -r /tmp/requirements.txt
COPY components ./components
COPY pipelines ./pipelines
RUN pip install --no-deps . && rm -rf /src

# The ingest job's text-cleaning UDF (components/ingest/jvm), compiled against this Spark.
FROM deps AS udf
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends openjdk-17-jdk-headless \
    && rm -rf /var/lib/apt/lists/*
RUN python -m components.ingest.udfs /opt/review-classifier-udfs.jar

FROM ${PYTHON_IMAGE}
# JAVA_HOME is the same path on every architecture (the JRE's directory is
# java-17-openjdk-amd64 or -arm64, Graviton): a link made here from the installed java.
# Debian packages follow the base image's (digest-pinned) bookworm release; see .hadolint.yaml.
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
    && rm -rf /var/lib/apt/lists/* \
    && ln -s "$(dirname "$(dirname "$(readlink -f /usr/bin/java)")")" /usr/lib/jvm/java-17
COPY --from=deps /opt/venv /opt/venv
COPY --from=s3a /opt/s3a-jars/ /opt/venv/lib/python3.11/site-packages/pyspark/jars/
COPY --from=udf /opt/review-classifier-udfs.jar /opt/review-classifier-udfs.jar
# Executors of a k8s:// master run this (components/ingest/executor_pod_template.yaml).
COPY --chmod=0755 images/spark/executor.sh /opt/spark-executor.sh
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYSPARK_PYTHON=/opt/venv/bin/python \
    JAVA_HOME=/usr/lib/jvm/java-17 \
    REVIEW_CLASSIFIER_UDF_JAR=/opt/review-classifier-udfs.jar \
    HOME=/tmp
USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["python", "-m", "components.ingest"]
