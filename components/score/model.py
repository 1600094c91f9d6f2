"""Which model scores: a registered MLflow version (by alias or number) or a model directory.

KServe and Spark executors cannot read ``models:/`` URIs, so a registered version is resolved
through the registry to the S3 prefix of its save_pretrained directory, as deploy does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from components.common.errors import ConfigurationError, ModelLoadError
from components.common.settings import Settings

_ALIAS = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[\w-]+)$")
_VERSION = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>\d+)$")


@dataclass(frozen=True)
class ResolvedModel:
    """What scores: registry name and version (empty for a bare directory) and its files."""

    name: str
    version: str
    uri: str  # s3:// prefix or local directory of the save_pretrained model

    def to_dict(self) -> dict:
        return {"name": self.name, "version": self.version, "uri": self.uri}


def parse_model_spec(spec: str, version: str = "") -> tuple[str, str, str]:
    """``(name, alias, version)`` of ``models:/name@alias`` or ``models:/name/N``.

    ``version`` overrides the alias or number in ``spec`` (the pipeline's ``model_version``).
    """
    if m := _ALIAS.match(spec):
        name, alias, number = m["name"], m["alias"], ""
    elif m := _VERSION.match(spec):
        name, alias, number = m["name"], "", m["version"]
    else:
        raise ConfigurationError(
            f"model {spec!r}: use models:/<name>@<alias>, models:/<name>/<version>, an s3:// "
            "prefix or a local directory of a save_pretrained model"
        )
    if version:
        if not version.isdigit():
            raise ConfigurationError(f"model_version {version!r} is not a version number")
        alias, number = "", version
    return name, alias, number


def resolve_model(spec: str, version: str = "", settings: Settings | None = None) -> ResolvedModel:
    """Resolve ``spec`` through the MLflow registry (``models:/``) or take it as a location."""
    if not spec.startswith("models:/"):
        if version:
            raise ConfigurationError("model_version needs a models:/ model, not a location")
        return ResolvedModel("", "", spec)
    from mlflow.exceptions import MlflowException

    from components.common import registry

    name, alias, number = parse_model_spec(spec, version)
    found = registry.find_version(name, alias, number)
    try:
        uri = registry.model_dir_uri(found.source, settings)
    except (MlflowException, ModelLoadError, OSError) as e:
        raise ModelLoadError(f"{name} v{found.version}: cannot find its files: {e}") from e
    return ResolvedModel(name, str(found.version), uri)
