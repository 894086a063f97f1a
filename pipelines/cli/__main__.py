"""``python -m pipelines.cli`` runs the ``loopline`` command line."""

from pipelines.cli import main

main()
