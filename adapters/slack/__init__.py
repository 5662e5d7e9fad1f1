"""Slack: mentions answered in threads, DMs, the `/chat` admin command; Socket Mode or HTTP.

`adapters.slack_adapter.serve(app)` is the entry point `python -m bot run` uses.
"""
