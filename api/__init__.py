"""Tocsin's HTTP API for agencies and analysts: ``create_app(settings)`` builds it."""

from api.app import create_app

__all__ = ["create_app"]
