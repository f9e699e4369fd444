"""``python -m notebook_deploy`` runs the command-line interface."""

from .cli import main

main()
