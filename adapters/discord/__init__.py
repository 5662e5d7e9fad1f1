"""The Discord adapter, one module per step:

- `translate`: which messages to answer, their conversation key and cleaned text
- `access`: allow-lists and who is an admin
- `sink`: typing, streamed edits and split messages for one reply
- `split`: cutting a long reply into messages
- `commands`: the `/chat` slash commands
- `chat_channels`: the channels where every message is answered
- `client`: the `discord.Client` that ties them together
- `run`: `serve(app)`, what `python -m bot run` starts when DISCORD_TOKEN is set
"""

from adapters.discord.run import serve

__all__ = ["serve"]
