"""Evidence Archiver: the application that wires recorder, stores and ledger together."""

__version__ = "0.1.0"
