"""Message text templates, one TOML file per language (package data for importlib.resources)."""
