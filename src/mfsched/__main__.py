"""`python -m mfsched` runs the command-line interface."""

from .cli import main

main()
