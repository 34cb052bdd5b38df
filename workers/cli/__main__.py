"""``python -m workers.cli``: the ``tocsin`` command line (for subprocesses and the demo)."""

from workers.cli.main import main

main()
