# syntax=docker/dockerfile:1
# The KServe predictor of our ServingRuntime: CUDA PyTorch 2.13.0, kserve, the project.
# Build from the repository root: make images  (or docker build -f images/serve.Dockerfile .)
ARG PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91

FROM ${PYTHON_IMAGE} AS deps
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml constraints.txt images/requirements.py ./
RUN python requirements.py pyproject.toml constraints.txt --group serve > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt
COPY components ./components
COPY pipelines ./pipelines
RUN pip install --no-deps . && rm -rf /src

FROM ${PYTHON_IMAGE}
COPY --from=deps /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    HOME=/tmp
USER 10001:10001
WORKDIR /tmp
EXPOSE 8080
ENTRYPOINT ["python", "-m", "components.serve"]
