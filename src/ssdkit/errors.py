"""Errors a user can cause (bad files, arguments, configs).

Each is a ``ValueError`` subclass whose message names the file, field or argument at fault; the CLI
prints the message on one line and exits with status 2. Anything else is a bug and stays a traceback.
"""


class SSDKitError(ValueError):
    """Base class of every error a user can cause."""


class ConfigError(SSDKitError):
    """A config file, key or value is wrong (the message names the key)."""


class DataError(SSDKitError):
    """A dataset file is missing, malformed or inconsistent (the message names the file/element)."""


class CheckpointError(SSDKitError):
    """A checkpoint is missing, unreadable or does not fit the model."""
