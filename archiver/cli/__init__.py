"""The ``archiver`` command line: one module per command group, ``main`` in
:mod:`archiver.cli.main`."""

from archiver.cli.main import main

__all__ = ["main"]
