"""Slack: mentions answered in threads, DMs, the `/chat` admin command; Socket Mode or HTTP.

`adapters.slack.run.serve(app)` is the entry point `python -m bot run` uses.
"""

from adapters.slack.run import serve

__all__ = ["serve"]
