"""The MLflow model registry: register with lineage, aliases, and model storage URIs for KServe.

KServe cannot read ``models:/`` URIs, so every registered version is resolved to the S3 prefix
of its save_pretrained directory inside the artifact store.
"""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow
import yaml
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from components.common.errors import ModelLoadError
from components.common.settings import Settings
from components.common.storage import S3Storage

logger = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"
PROXY_SCHEME = "mlflow-artifacts:/"


def storage_uri(artifact_location: str, settings: Settings | None = None) -> str:
    """The S3 URI behind an artifact location (the server proxies ``mlflow-artifacts:/``)."""
    if artifact_location.startswith(PROXY_SCHEME):
        settings = settings or Settings.from_env()
        rest = artifact_location[len(PROXY_SCHEME) :].lstrip("/")
        return f"s3://{settings.mlflow_artifact_bucket}/{rest}"
    return artifact_location


def model_dir_uri(model_uri: str, settings: Settings | None = None) -> str:
    """S3 prefix of the save_pretrained directory inside a logged pyfunc model."""
    if not model_uri.startswith("models:/m-"):
        raise ModelLoadError(f"{model_uri!r} is not a logged-model URI (models:/m-...)")
    logged = mlflow.get_logged_model(model_uri.removeprefix("models:/"))
    root = storage_uri(logged.artifact_location, settings).rstrip("/")
    mlmodel = yaml.safe_load(S3Storage(settings).get_bytes(f"{root}/MLmodel"))
    relative = mlmodel["flavors"]["python_function"]["artifacts"]["model_dir"]["path"]
    return f"{root}/{relative}"


def register(model_uri: str, name: str, tags: dict[str, str], alias: str = CHALLENGER) -> str:
    """Register ``model_uri`` as a new version with ``tags`` and point ``alias`` at it."""
    version = mlflow.register_model(model_uri, name, tags={k: str(v) for k, v in tags.items()})
    client = mlflow.MlflowClient()
    client.set_registered_model_alias(name, alias, version.version)
    logger.info("registered %s version %s (alias %s)", name, version.version, alias)
    return str(version.version)


def version_by_alias(name: str, alias: str) -> mlflow.entities.model_registry.ModelVersion | None:
    try:
        return mlflow.MlflowClient().get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def find_version(name: str, alias: str = "", number: str = "") -> ModelVersion:
    """The version ``alias`` points at, or version ``number``; ModelLoadError naming what lacks."""
    try:
        client = mlflow.MlflowClient()
        return (client.get_model_version_by_alias(name, alias) if alias
                else client.get_model_version(name, number))  # fmt: skip
    except MlflowException as e:
        what = f"alias {alias!r}" if alias else f"version {number}"
        raise ModelLoadError(
            f"registered model {name!r} has no {what} in the MLflow registry at "
            f"{mlflow.get_tracking_uri()}"
        ) from e


def promote(name: str, version: str) -> None:
    """Make ``version`` the champion (after its deployment succeeded)."""
    client = mlflow.MlflowClient()
    client.set_registered_model_alias(name, CHAMPION, version)
    client.set_model_version_tag(name, version, "promoted", "true")


def download_model_dir(model_uri: str, local: Path, settings: Settings | None = None) -> Path:
    """Fetch a registered version's save_pretrained directory to ``local``."""
    S3Storage(settings).download_prefix(model_dir_uri(model_uri, settings), local)
    return local
