"""Arbiter: a real-time decisioning engine."""

__version__ = "0.1.0"
