"""User errors: one clear line naming the file, the key path and the value."""

from __future__ import annotations

_UNSET = object()


class StressError(Exception):
    """Base class of every error the user can fix (bad config, bad data).

    The CLI prints ``str(error)`` on one line and exits with code 2.
    """


class ConfigError(StressError, ValueError):
    """A config value, or a file a config points to, is invalid.

    Parameters
    ----------
    key : str
        Dotted key path in the YAML (``market.sigma``, ``policies.1.layers``).
    message : str
        What is wrong, in words.
    value : object, optional
        The offending value, shown as ``got <value>``.
    source : str, optional
        The config file (or data file) the key comes from.

    It is a ``ValueError`` too, so that pydantic validators may raise it and
    the loader can still report the key path inside the model.
    """

    def __init__(self, key: str, message: str, value: object = _UNSET,
                 source: str | None = None):
        self.key = key
        self.message = message
        self.value = value
        self.source = source
        super().__init__(str(self))

    def with_source(self, source: str) -> "ConfigError":
        if self.source is None:
            self.source = source
        return self

    def __str__(self) -> str:
        parts = []
        if self.source:
            parts.append(self.source)
        if self.key:
            parts.append(self.key)
        text = ": ".join(parts + [self.message])
        if self.value is not _UNSET:
            value = self.value
            if hasattr(value, "tolist"):  # numpy scalars and arrays
                value = value.tolist()
            text += f", got {value!r}"
        return text


class ConservationError(RuntimeError):
    """The loss identity or money conservation failed: a bug, never user error."""
