"""``python -m echo_batch``."""

from echo_batch.cli import main

main()
