"""Helpers shared by the test packages (on the test path via ``pythonpath`` in pyproject)."""
