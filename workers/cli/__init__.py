"""The ``tocsin`` command line: thin commands over job functions."""
