"""``python -m conveyor``: the same as the ``conveyor`` command."""

from .cli import main

main()
