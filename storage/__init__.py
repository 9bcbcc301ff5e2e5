"""Content-addressed blob stores: local directory, S3, in-memory, and replication.

This package is a library. It never imports ``archiver`` or ``chain_of_custody``.
"""
