"""Domain exceptions raised at library boundaries, each with a message a user can act on."""


class PlatformError(Exception):
    """Base class for every error this platform raises on purpose."""


class ConfigurationError(PlatformError):
    """A setting or parameter is missing or has a value outside its allowed set."""


class StorageError(PlatformError):
    """An S3 or local storage operation failed, or a URI is malformed."""


class InvalidInput(PlatformError):
    """Input data or a request payload does not match its contract."""


class DataValidationFailed(PlatformError):
    """A data-validation gate failed; the message names the failed checks and the report."""


class ModelLoadError(PlatformError):
    """A model directory could not be loaded."""


class StackError(PlatformError):
    """The embedded local stack could not be started, reached or stopped."""
