"""User-facing errors: the CLI prints their message without a traceback."""


class UsclError(Exception):
    """A problem with the user's input, files or configuration."""


class ConfigError(UsclError):
    """An invalid configuration (unknown key, wrong type, bad value)."""
