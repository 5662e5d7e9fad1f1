"""The chat: from a person's message to a finished reply. The conversation manager
(`manager`), the commands (`commands`), what a channel's next reply uses
(`effective_settings`), prompt building (`prompt`), post-processing (`postprocess`), ordering
and rate limits, and the ports it needs (`ports`: personas, the reply observer). Knows no
platform and no engine; it reaches the model through `bot.serving`."""
