"""Alembic migrations: the one way the schema is created or changed, on SQLite and PostgreSQL."""
