# The front door of the review-classifier platform. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
STATE_DIR ?= .local
ROWS ?= 20000
PYTEST_ARGS ?=
IMAGE_REGISTRY ?= ghcr.io/review-classifier
IMAGE_TAG ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo dev)
export IMAGE_REGISTRY IMAGE_TAG
export LOCAL_STATE_DIR := $(STATE_DIR)

.PHONY: help setup lock test test-unit lint fmt compile pipeline-run serve bench images push \
	deploy stack-up stack-down stack-status generate clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_%-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml constraints.txt
	@test -n "$(PYTHON)" || { echo "Python 3.11 is required"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --constraint constraints.txt --editable ".[dev]"
	@touch $@

setup: $(STAMP) ## Create .venv and install the project with locked versions

lock: ## Re-resolve the pins in pyproject.toml into constraints.txt (fresh venv)
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet --editable ".[dev]"
	{ head -3 constraints.txt; .lock-venv/bin/pip freeze --all \
	  | grep -v -e '^-e' -e '^pip==' -e '^review-classifier'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt && rm -rf .lock-venv

test: $(STAMP) ## Run the whole test suite (unit, integration, pipelines, k8s)
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

pipeline-run: generate ## Run the pipeline (embedded default, or KFP when KFP_HOST is set)
	@echo "The stages available so far have run above (local stack, generated raw data)."
	@echo "The KFP pipeline itself is not built yet (issue: the pipeline and make pipeline-run)."
	@exit 1

compile: $(STAMP) ## Compile the KFP pipeline to pipelines/review_classifier.yaml
	@echo "The KFP pipeline is not built yet (issue: the pipeline)."; exit 1

serve: $(STAMP) ## Serve a trained model locally (MODEL_DIR=...)
	@echo "The predictor is not built yet (issue: serve and deploy)."; exit 1

bench: $(STAMP) ## Run every benchmark in benchmarks/
	@echo "No benchmark is built yet."; exit 1

images: ## Build the spark, train and serve images
	@echo "The images are not built yet (issue: cluster packaging)."; exit 1

push: images ## Push the images to IMAGE_REGISTRY

deploy: ## Install the platform on a cluster (kubectl, helm)
	@echo "The manifests and charts are not built yet (issue: cluster packaging)."; exit 1

clean: ## Stop the local stack and remove .local, caches and build outputs
	-@test -x $(PY) && $(PY) -m pipelines.stack down
	rm -rf $(STATE_DIR) .pytest_cache .ruff_cache build *.egg-info
