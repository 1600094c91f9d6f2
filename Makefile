# The front door of the review-classifier platform. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
STATE_DIR ?= .local
ROWS ?= 20000
RUN_ARGS ?=
MONITOR_ARGS ?=
MODEL_DIR ?=
MODEL_NAME ?= review-classifier
PORT ?= 8080
PYTEST_ARGS ?=
IMAGE_REGISTRY ?= ghcr.io/review-classifier
# One tag scheme: $(IMAGE_REGISTRY)/<spark|train|serve|mlflow>:<git sha>. `images`, `push`,
# `deploy` and a KFP `pipeline-run` (KFP_HOST set in the environment) use these two variables. (The committed pipeline YAML
# is compiled with the settings' default tag, the project version.)
IMAGE_TAG ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo dev)
IMAGES := spark train serve mlflow
OVERLAY ?= eks
NAMESPACE ?= review-classifier
MLFLOW_VALUES ?=
K8S_TOOLS_DIR ?= $(HOME)/.cache/review-classifier/k8s-tools
# The tools live outside the checkout (shared by every clone): the stamp is named by the
# installer's content, so a fresh clone (new mtimes) reuses them and a changed installer re-runs.
K8S_STAMP := $(K8S_TOOLS_DIR)/.installed-$(shell sha256sum tools/k8s/install.sh 2>/dev/null | cut -c1-12)
export LOCAL_STATE_DIR := $(STATE_DIR)
export K8S_TOOLS_DIR

.PHONY: help setup lock test test-unit lint fmt compile pipeline-run batch-score monitor serve bench images push \
	gpu-wheels gpu-check gpu-check-rehearse image-sizes \
	deploy k8s-tools crds stack-up stack-down stack-status generate clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_%-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# First use installs quietly: one line, pip's whole output in $(STATE_DIR)/logs/setup.log,
# and its last lines on failure.
SETUP_LOG := $(STATE_DIR)/logs/setup.log
$(STAMP): pyproject.toml constraints.txt
	@test -n "$(PYTHON)" || { echo "Python 3.11 is required"; exit 1; }
	@mkdir -p $(dir $(SETUP_LOG))
	@echo "Installing the project and its locked dependencies into $(VENV) (first use: several minutes; log: $(SETUP_LOG))"
	@{ $(PYTHON) -m venv $(VENV) && $(PY) -m pip install --disable-pip-version-check \
	     --constraint constraints.txt --editable ".[dev]"; } > $(SETUP_LOG) 2>&1 \
	  || { tail -n 25 $(SETUP_LOG); echo "setup failed; the whole log: $(SETUP_LOG)"; exit 1; }
	@touch $@

setup: $(STAMP) ## Create .venv and install the project with locked versions

lock: ## Re-resolve the pins in pyproject.toml into constraints.txt (fresh venv)
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet --editable ".[dev]"
	{ head -3 constraints.txt; .lock-venv/bin/pip freeze --all \
	  | grep -v -e '^-e' -e '^pip==' -e '^review-classifier'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt && rm -rf .lock-venv

K8S_LOG := $(STATE_DIR)/logs/k8s-tools.log
$(K8S_STAMP):
	@mkdir -p $(dir $(K8S_LOG))
	@echo "Installing the Kubernetes test tools into $(K8S_TOOLS_DIR) (first use: about 5 minutes; log: $(K8S_LOG))"
	@PYTHON=$(PYTHON) bash tools/k8s/install.sh > $(K8S_LOG) 2>&1 \
	  || { tail -n 25 $(K8S_LOG); echo "k8s-tools failed; the whole log: $(K8S_LOG)"; exit 1; }
	@touch $@

k8s-tools: $(K8S_STAMP) ## Install helm, kubectl, etcd, kube-apiserver, checkov, bwrap for tests/k8s (once)

test: $(STAMP) $(K8S_STAMP) ## Run the whole test suite (unit, integration, pipelines, k8s)
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: $(STAMP) ## Run the unit tests only (seconds)
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

lint: $(STAMP) ## Check formatting and lint with ruff
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

fmt: $(STAMP) ## Format and auto-fix with ruff
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

stack-up: $(STAMP) ## Start (or reuse) the local S3 and MLflow servers
	$(PY) -m pipelines.stack up

stack-down: $(STAMP) ## Stop the local stack and every process registered with it
	$(PY) -m pipelines.stack down

stack-status: $(STAMP) ## Show the local stack's endpoints
	$(PY) -m pipelines.stack status

generate: stack-up ## Seed the local raw bucket with ROWS generated reviews
	eval "$$($(PY) -m pipelines.stack env)" && \
	$(PY) -m pipelines.generate --rows $(ROWS) --output "s3://$${DATA_BUCKET:-review-classifier}/$${RAW_PREFIX:-raw/amazon-reviews/}"

# On KFP the steps run in the images of IMAGE_REGISTRY:IMAGE_TAG. Locally the image names only
# feed kfp.local's cache keys, so they are left at the settings' default there: a new commit
# must not invalidate the cached ingest and validate steps.
pipeline-run: $(STAMP) ## Run the pipeline (embedded default, or KFP when KFP_HOST is set)
	$(if $(KFP_HOST),IMAGE_REGISTRY=$(IMAGE_REGISTRY) IMAGE_TAG=$(IMAGE_TAG)) $(PY) -m pipelines.run --rows $(ROWS) $(RUN_ARGS)

batch-score: $(STAMP) ## Score reviews with the champion: RUN_ARGS="--input s3://... [--output s3://...]"
	$(if $(KFP_HOST),IMAGE_REGISTRY=$(IMAGE_REGISTRY) IMAGE_TAG=$(IMAGE_TAG)) $(PY) -m pipelines.run --pipeline batch-score $(RUN_ARGS)

monitor: $(STAMP) ## Captured traffic vs the training data; retrain when it says so (MONITOR_ARGS="--no-retrain ...")
	$(if $(KFP_HOST),IMAGE_REGISTRY=$(IMAGE_REGISTRY) IMAGE_TAG=$(IMAGE_TAG)) $(PY) -m pipelines.monitor $(MONITOR_ARGS)

compile: $(STAMP) ## Compile the KFP pipelines to pipelines/review_classifier.yaml and batch_score.yaml
	$(PY) -m pipelines.compile

serve: $(STAMP) ## Serve a model directory on 127.0.0.1 (its gated variant): make serve MODEL_DIR=... [PORT=8080]
	@test -n "$(MODEL_DIR)" || { echo "set MODEL_DIR to a save_pretrained directory or s3:// prefix"; exit 2; }
	@# on a laptop: loopback only, and a free gRPC port (GRPC_PORT=N to name one)
	$(PY) -m components.serve --model_name $(MODEL_NAME) --model_dir $(MODEL_DIR) --http_port $(PORT) \
	  --bind_address 127.0.0.1 --variant auto \
	  --grpc_port $${GRPC_PORT:-$$($(PY) -c 'from components.common.processes import free_port; print(free_port())')}

bench: $(STAMP) ## Run every benchmark in benchmarks/ (results in benchmarks/results/)
	$(PY) -m benchmarks.ingest
	$(PY) -m benchmarks.train
	$(PY) -m benchmarks.serve_accuracy
	$(PY) -m benchmarks.serve
	$(PY) -m benchmarks.quality
	$(PY) -m benchmarks.explain

bench-%: $(STAMP) ## Run one benchmark, e.g. make bench-serve
	$(PY) -m benchmarks.$*

# The GPU check for a lent GPU machine (see README "GPU check"): wheels first, here, with PyPI.
GPU_WHEELS := boto3 botocore s3transfer jmespath python-dateutil six urllib3 accelerate psutil
# The predictor there: KServe with its dependencies, less what that machine already has (numpy
# with torch, transformers, onnxruntime) or the predictor never imports (PIL, grpc_tools, uvloop).
# onnx: the image has onnxruntime but not onnx, which the int8 variant's quantizer imports.
SERVE_WHEELS := kserve onnx
GPU_HAS := numpy setuptools pillow grpcio_tools uvloop
WHEEL_PLATFORMS := --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
	--platform manylinux_2_28_x86_64 --implementation cp --python-version 3.12
gpu-wheels: ## Download the wheels the GPU check carries to a GPU machine (Python 3.12) into build/gpu-wheels
	rm -rf build/gpu-wheels && mkdir -p build/gpu-wheels
	$(PYTHON) -m pip download --quiet --only-binary=:all: --no-deps $(WHEEL_PLATFORMS) \
	  --constraint constraints.txt --dest build/gpu-wheels $(GPU_WHEELS)
	$(PYTHON) -m pip download --quiet --only-binary=:all: $(WHEEL_PLATFORMS) \
	  --constraint constraints.txt --dest build/gpu-wheels $(SERVE_WHEELS)
	cd build/gpu-wheels && rm -f $(addsuffix -*.whl,$(GPU_HAS)) && du -sh .

gpu-check: ## Training and serving at bert-base size vs the HF Trainer / HF pipeline, bf16 checks (CPU: dry run)
	bash tools/gpu/check.sh

gpu-check-rehearse: ## gpu-check's dry run in a Python 3.12 env shaped like the lent GPU image, carried wheels only
	bash tools/gpu/rehearse.sh

images: $(addprefix image-,$(IMAGES)) ## Build the spark, train, serve, mlflow images as IMAGE_REGISTRY/<name>:IMAGE_TAG

image-%: ## Build one image, e.g. make image-serve
	docker build -f images/$*.Dockerfile -t $(IMAGE_REGISTRY)/$*:$(IMAGE_TAG) .

image-sizes: $(STAMP) ## Record each image's packages and installed size (images/sizes.json)
	$(PY) images/requirements.py pyproject.toml constraints.txt --sizes > images/sizes.json

push: $(addprefix push-,$(IMAGES)) ## Push the images to IMAGE_REGISTRY (log in first, e.g. aws ecr get-login-password)

push-%: image-% ## Push one image
	docker push $(IMAGE_REGISTRY)/$*:$(IMAGE_TAG)

deploy: ## Install on the current kube context: OVERLAY=eks|local, then the MLflow chart
	OVERLAY=$(OVERLAY) NAMESPACE=$(NAMESPACE) IMAGE_REGISTRY=$(IMAGE_REGISTRY) \
	  IMAGE_TAG=$(IMAGE_TAG) MLFLOW_VALUES=$(MLFLOW_VALUES) bash tools/k8s/deploy.sh

crds: ## Download the pinned upstream CRDs (KServe, Training Operator v1, Trainer v2) into build/crds
	bash tools/k8s/fetch-crds.sh build/crds

clean: ## Stop the local stack and remove .local, caches and build outputs
	-@test -x $(PY) && $(PY) -m pipelines.stack down
	rm -rf $(STATE_DIR) .pytest_cache .ruff_cache build *.egg-info
