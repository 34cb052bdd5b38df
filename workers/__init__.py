"""Wiring: the command line and (later) Celery tasks driving feeds -> geo -> alerts."""
