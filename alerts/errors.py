"""Errors raised by the alerting core; retry decisions elsewhere go by these types."""


class AlertError(Exception):
    """Root of every error raised by the alerting core."""


class InvalidTransition(AlertError, ValueError):  # noqa: N818 - the name the design uses
    """An alert lifecycle move that :data:`alerts.model.ALLOWED_TRANSITIONS` forbids."""


class CapError(AlertError, ValueError):
    """A CAP message is invalid, unsafe, or breaks a rule of CAP 1.2 (the message says which)."""


class RuleTableError(AlertError, ValueError):
    """A priority rule table is malformed (missing level, unordered thresholds...)."""


class SubscriptionError(AlertError, ValueError):
    """A subscription is invalid: bad area, unknown zone code, unknown hazard kind..."""


class DispatchError(AlertError):
    """A message could not be handed to a channel; the subclass says whether to retry."""


class RetryableDispatchError(DispatchError, OSError):
    """A passing failure (timeout, refused connection, 5xx, 429): try again later."""


class PermanentDispatchError(DispatchError, ValueError):
    """A failure that retrying cannot fix (4xx, refused address, bad credentials): stop."""
