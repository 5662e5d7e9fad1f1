"""The terminal as a chat platform (`terminal`); `python -m bot console` serves it."""
