"""Entry point for ``python -m lowcomm`` (used under ``torchrun``)."""

from lowcomm.cli import main

main()
