"""Who may talk to the bot and who may change its settings, from the DISCORD_* allow-lists."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import discord

from bot.app.settings import Settings


@dataclass(frozen=True)
class Access:
    """Every list holds ids as strings; an empty list allows everyone.

    - Guilds and channels restrict where the bot listens (a thread passes if its parent does).
      DMs are governed by `allow_dms` instead.
    - Users and roles restrict who: a person passes if both are empty, if their id is listed or
      if they hold a listed role. A DM carries no roles, so with a role list only listed users
      (and admins) get answers in DMs.
    - Admins (Administrator permission, an admin role or an admin user id) always pass the
      people lists, so they can still configure the bot, but not the guild and channel lists.
    """

    guild_ids: frozenset[str] = frozenset()
    channel_ids: frozenset[str] = frozenset()
    role_ids: frozenset[str] = frozenset()
    user_ids: frozenset[str] = frozenset()
    admin_role_ids: frozenset[str] = frozenset()
    admin_user_ids: frozenset[str] = frozenset()
    allow_dms: bool = True

    @classmethod
    def from_settings(cls, settings: Settings) -> Access:
        return cls(
            guild_ids=frozenset(settings.discord_guild_ids),
            channel_ids=frozenset(settings.discord_channel_ids),
            role_ids=frozenset(settings.discord_role_ids),
            user_ids=frozenset(settings.discord_user_ids),
            admin_role_ids=frozenset(settings.discord_admin_role_ids),
            admin_user_ids=frozenset(settings.discord_admin_user_ids),
            allow_dms=settings.discord_allow_dms,
        )

    def is_admin(self, user: discord.abc.User, *, administrator: bool = False) -> bool:
        """`administrator`: the Administrator permission, which the caller knows best (an
        interaction carries it; for a message it comes from the member's roles)."""
        if administrator or str(user.id) in self.admin_user_ids:
            return True
        return bool(self.admin_role_ids & _role_ids(user))

    def allows_place(self, guild_id: int | None, channel_ids: Iterable[int]) -> bool:
        if guild_id is None:
            return self.allow_dms
        if self.guild_ids and str(guild_id) not in self.guild_ids:
            return False
        return not self.channel_ids or any(str(c) in self.channel_ids for c in channel_ids)

    def allows_person(self, user: discord.abc.User, *, is_admin: bool) -> bool:
        if is_admin or not (self.user_ids or self.role_ids):
            return True
        return str(user.id) in self.user_ids or bool(self.role_ids & _role_ids(user))


def _role_ids(user: discord.abc.User) -> frozenset[str]:
    roles = getattr(user, "roles", ())  # a Member has roles; a User (in a DM) has none
    return frozenset(str(role.id) for role in roles)


def has_administrator(user: discord.abc.User) -> bool:
    """For a message: a guild member's Administrator permission, from their roles (and whether
    they own the guild)."""
    permissions = getattr(user, "guild_permissions", None)
    return bool(permissions and permissions.administrator)
