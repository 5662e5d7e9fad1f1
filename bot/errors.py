"""Errors a user can cause or meet. Each carries a short message meant for the user, in Japanese;
anything that is not a `UserFacingError` is a bug, logged with its traceback."""

from __future__ import annotations


class UserFacingError(Exception):
    """An error whose `user_message` is safe and useful to show in the chat."""

    def __init__(self, user_message: str, *, detail: str | None = None) -> None:
        super().__init__(detail or user_message)
        self.user_message = user_message


class InvalidMessage(UserFacingError):
    """The message cannot be answered as sent (empty, too long, ...)."""


class UnknownName(UserFacingError):
    """An unknown model or persona name."""


class ModelLoadError(UserFacingError):
    """A model could not be loaded. `user_message` says what to change."""


class GenerationFailed(UserFacingError):
    """Generation failed for this request; the worker keeps serving."""


class NotPermitted(UserFacingError):
    """A non-admin asked for an admin-only command."""


class ConfigError(RuntimeError):
    """The environment is missing or contradicts a setting; the message says which."""


class PlatformUnreachable(RuntimeError):
    """A chat platform could not be reached when the bot started (offline, DNS, firewall).
    Once connected, the platform clients retry dropped connections themselves."""

    def __init__(self, platform: str, reason: BaseException) -> None:
        why = str(reason) or type(reason).__name__
        super().__init__(
            f"could not connect to {platform}: {why}. "
            "Check the network (proxy, firewall) and start the bot again."
        )
