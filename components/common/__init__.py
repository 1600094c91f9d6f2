"""Code shared by every stage: settings, storage, schema, logging and errors."""

from components.common.errors import (
    ConfigurationError,
    DataValidationFailed,
    InvalidInput,
    ModelLoadError,
    PlatformError,
    StorageError,
)
from components.common.schema import RAW_COLUMNS, LabelMap, LabelMode, label_map_for
from components.common.settings import Settings

__all__ = [
    "RAW_COLUMNS",
    "ConfigurationError",
    "DataValidationFailed",
    "InvalidInput",
    "LabelMap",
    "LabelMode",
    "ModelLoadError",
    "PlatformError",
    "Settings",
    "StorageError",
    "label_map_for",
]
