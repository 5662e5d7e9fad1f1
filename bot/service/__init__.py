"""Running the bot as a service: Prometheus metrics and the health/metrics HTTP port."""

from bot.service.monitor import Monitor

__all__ = ["Monitor"]
