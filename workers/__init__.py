"""Wiring: the command line, pipelines and (later) Celery tasks that drive feeds -> geo -> alerts."""
