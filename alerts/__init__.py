"""Alerts: assessment, priority, CAP 1.2 rendering and channels (built in later issues)."""
