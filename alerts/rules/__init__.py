"""Priority rule tables shipped as package data (read through importlib.resources)."""
