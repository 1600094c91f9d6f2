"""Settings read once from the environment (and an optional ``.env`` file), validated at once.

Secrets are never settings: on EKS, S3 access comes from IRSA (the web-identity token that
boto3 finds by itself); locally, from the embedded stack's throwaway credentials.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from components.common.errors import ConfigurationError
from components.common.images import DEFAULT_REGISTRY, DEFAULT_TAG, image

RETRY_MODES = ("standard", "adaptive")
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_URL_RE = re.compile(r"^https?://[^\s/]+")

# Environment variable -> (field, default, help). The README's configuration table is this.
# The namespace of the platform's workloads (manifests/base); KSERVE_NAMESPACE and
# TRAINING_NAMESPACE default to it, and every spec that needs a namespace takes them.
DEFAULT_NAMESPACE = "review-classifier"

ENV_VARS: dict[str, tuple[str, str | None, str]] = {
    "AWS_REGION": ("aws_region", "us-east-1", "AWS region of the buckets and the cluster"),
    "S3_ENDPOINT_URL": (
        "s3_endpoint_url",
        None,
        "S3 API endpoint override (the local stack sets it); unset means AWS",
    ),
    "S3_RETRY_MODE": ("s3_retry_mode", "standard", "botocore retry mode: standard or adaptive"),
    "S3_MAX_ATTEMPTS": ("s3_max_attempts", "8", "botocore total attempts per S3 call"),
    "DATA_BUCKET": ("data_bucket", "review-classifier", "bucket for raw data and run outputs"),
    "RAW_PREFIX": ("raw_prefix", "raw/amazon-reviews/", "prefix of the raw review TSV files"),
    "RUNS_PREFIX": ("runs_prefix", "runs/", "prefix under which each run writes its outputs"),
    "MLFLOW_ARTIFACT_BUCKET": (
        "mlflow_artifact_bucket",
        "mlflow-artifacts",
        "bucket where the MLflow server stores artifacts",
    ),
    "MLFLOW_TRACKING_URI": ("mlflow_tracking_uri", None, "MLflow tracking server URL"),
    "MLFLOW_EXPERIMENT": ("mlflow_experiment", "review-classifier", "MLflow experiment name"),
    "REGISTERED_MODEL_NAME": (
        "registered_model_name",
        "review-classifier",
        "MLflow registered model name",
    ),
    "KFP_HOST": ("kfp_host", None, "Kubeflow Pipelines API URL; unset runs the embedded default"),
    "KFP_EXPERIMENT": ("kfp_experiment", "review-classifier", "KFP experiment for remote runs"),
    "KFP_NAMESPACE": (
        "kfp_namespace",
        None,
        "multi-user Kubeflow: the profile's namespace (token: KFP_TOKEN or a token file)",
    ),
    "IMAGE_REGISTRY": (
        "image_registry",
        DEFAULT_REGISTRY,
        "registry of the spark, train and serve images (e.g. an ECR URL)",
    ),
    "IMAGE_TAG": ("image_tag", DEFAULT_TAG, "tag of the images (default: the project version)"),
    "KSERVE_NAMESPACE": ("kserve_namespace", DEFAULT_NAMESPACE, "namespace of the predictor"),
    "TRAINING_NAMESPACE": (
        "training_namespace",
        DEFAULT_NAMESPACE,
        "namespace of multi-node training jobs (TrainJob or PyTorchJob)",
    ),
    "LOCAL_STATE_DIR": ("local_state_dir", ".local", "state of the embedded local stack"),
}


# The ConfigMap that carries the settings every pod of the platform reads, and the keys it may
# hold: the pipeline's steps get them through kfp.kubernetes; the pods of a multi-node training
# job, in the training namespace, from its copy there (a pod reads only ConfigMaps of its own
# namespace). Nothing here is a secret.
PLATFORM_CONFIG_MAP = "review-classifier-env"
TRAINING_CONFIG_MAP = "review-classifier-training-env"
PLATFORM_ENV_KEYS = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT", "REGISTERED_MODEL_NAME",
                     "MLFLOW_ARTIFACT_BUCKET", "AWS_REGION", "S3_ENDPOINT_URL", "DATA_BUCKET",
                     "IMAGE_REGISTRY", "IMAGE_TAG", "KSERVE_NAMESPACE",
                     "TRAINING_NAMESPACE")  # fmt: skip


@dataclass(frozen=True)
class Settings:
    """Every environment-derived setting of the platform."""

    aws_region: str = "us-east-1"
    s3_endpoint_url: str | None = None
    s3_retry_mode: str = "standard"
    s3_max_attempts: int = 8
    data_bucket: str = "review-classifier"
    raw_prefix: str = "raw/amazon-reviews/"
    runs_prefix: str = "runs/"
    mlflow_artifact_bucket: str = "mlflow-artifacts"
    mlflow_tracking_uri: str | None = None
    mlflow_experiment: str = "review-classifier"
    registered_model_name: str = "review-classifier"
    kfp_host: str | None = None
    kfp_experiment: str = "review-classifier"
    kfp_namespace: str | None = None
    image_registry: str = DEFAULT_REGISTRY
    image_tag: str = DEFAULT_TAG
    kserve_namespace: str = DEFAULT_NAMESPACE
    training_namespace: str = DEFAULT_NAMESPACE
    local_state_dir: str = ".local"

    def __post_init__(self) -> None:
        if self.s3_retry_mode not in RETRY_MODES:
            raise ConfigurationError(
                f"S3_RETRY_MODE={self.s3_retry_mode!r} is not one of: {', '.join(RETRY_MODES)}"
            )
        if not 1 <= self.s3_max_attempts <= 50:
            raise ConfigurationError(f"S3_MAX_ATTEMPTS={self.s3_max_attempts} is not in 1..50")
        for var in ("DATA_BUCKET", "MLFLOW_ARTIFACT_BUCKET"):
            value = getattr(self, ENV_VARS[var][0])
            if not _BUCKET_RE.match(value):
                raise ConfigurationError(f"{var}={value!r} is not a valid S3 bucket name")
        for var in ("S3_ENDPOINT_URL", "KFP_HOST"):
            value = getattr(self, ENV_VARS[var][0])
            if value is not None and not _URL_RE.match(value):
                raise ConfigurationError(f"{var}={value!r} is not an http(s):// URL")
        for var in ("RAW_PREFIX", "RUNS_PREFIX"):
            value = getattr(self, ENV_VARS[var][0])
            if value.startswith("/") or not value.endswith("/"):
                raise ConfigurationError(f"{var}={value!r} must be relative and end with '/'")

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, dotenv: Path | None = Path(".env")
    ) -> Settings:
        """Build settings from ``environ`` (default ``os.environ``) over a ``.env`` file."""
        values: dict[str, str] = {}
        if dotenv is not None and dotenv.is_file():
            values.update(read_dotenv(dotenv))
        values.update(os.environ if environ is None else environ)
        kwargs: dict[str, object] = {}
        types = {f.name: f.type for f in fields(cls)}
        for var, (name, _default, _help) in ENV_VARS.items():
            raw = values.get(var)
            if raw is None or raw == "":
                continue
            if types[name] == "int":
                try:
                    kwargs[name] = int(raw)
                except ValueError as e:
                    raise ConfigurationError(f"{var}={raw!r} is not an integer") from e
            else:
                kwargs[name] = raw
        return cls(**kwargs)

    @property
    def raw_uri(self) -> str:
        return f"s3://{self.data_bucket}/{self.raw_prefix}"

    def run_uri(self, run_id: str) -> str:
        """The S3 prefix under which one pipeline run writes its outputs."""
        return f"s3://{self.data_bucket}/{self.runs_prefix}{run_id}/"

    def image(self, name: str) -> str:
        """Full reference of one of the project's images (spark, train, serve)."""
        return image(name, self.image_registry, self.image_tag)


def read_dotenv(path: Path) -> dict[str, str]:
    """Parse ``KEY=VALUE`` lines; ``#`` comments, blank lines and ``export`` are allowed."""
    out: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ConfigurationError(f"{path}:{number}: expected KEY=VALUE, got {line!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key.strip()] = value
    return out
