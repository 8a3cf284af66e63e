"""User-facing errors: the CLI prints their message without a traceback.

Library code words its messages in Python parameter and config-key names (a
notebook user passes parameters, not flags). An error about one setting names
it in ``param`` (``"epochs"``, ``"dataset.image_size"``, ``"only_folds"``); the
CLI layer, which knows which flag sets which parameter, adds the flag.
"""


class UsclError(Exception):
    """A problem with the user's input, files or configuration.

    ``param``: the parameter or dotted config key the problem is about, if one.
    """

    def __init__(self, message: str = "", *, param: str | None = None):
        super().__init__(message)
        self.param = param


class ConfigError(UsclError):
    """An invalid configuration (unknown key, wrong type, bad value)."""
