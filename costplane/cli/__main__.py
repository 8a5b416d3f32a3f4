"""``python -m costplane.cli`` runs the same command as the ``costplane`` script."""

from costplane.cli.main import run

run()
