"""Errors a user can cause or meet. Each carries a short message meant for the user, in Japanese;
anything that is not a `UserFacingError` is a bug, logged with its traceback."""

from __future__ import annotations

OUT_OF_MEMORY_REPLY = (
    "メモリが足りず返事を作れませんでした。短いメッセージにするか、/reset で会話を"
    "新しくしてからもう一度お試しください。"
)
GENERIC_FAILURE_REPLY = (
    "申し訳ありません、返事を作る途中でエラーが起きました。もう一度お試しください。"
)


class UserFacingError(Exception):
    """An error whose `user_message` is safe and useful to show in the chat."""

    def __init__(self, user_message: str, *, detail: str | None = None) -> None:
        super().__init__(detail or user_message)
        self.user_message = user_message


def shorten(name: str, limit: int = 40) -> str:
    """A name a user typed, echoed in a reply: a 10,000-character name must not flood the chat
    (or exceed a platform's message limit). Cut in the middle, keeping both ends: a path's last
    part names the model."""
    name = " ".join(name.split())
    if len(name) <= limit:
        return name
    half = (limit - 1) // 2
    return f"{name[:half]}…{name[-half:]}"


class InvalidMessage(UserFacingError):
    """The message cannot be answered as sent (empty, too long, ...)."""


class UnknownName(UserFacingError):
    """An unknown model or persona name."""


class ModelLoadError(UserFacingError):
    """A model could not be loaded. `user_message` says what to change."""


class AdapterMismatch(UserFacingError):
    """A persona's LoRA adapter cannot be used with the model (or engine) serving now."""


class GenerationFailed(UserFacingError):
    """Generation failed for this request; the worker keeps serving."""


class ShuttingDown(UserFacingError):
    """The bot is stopping and takes no new messages."""


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
