"""Serving: the model worker, the one thread that owns the model and schedules its rows
(`worker`), and the jobs and handles it hands back to the asyncio side (`jobs`)."""
