"""The store: SQLAlchemy 2 models, a small repository API, Alembic migrations.

Store(url)                       engine + sessions (SQLite WAL by default, PostgreSQL)
migrate.upgrade(url)             apply migrations (what `backbone init` does)
repository.record_acceptances    new | redelivery | duplicate, atomic across processes
"""

from .engine import Store, async_url, create_engine

__all__ = ["Store", "async_url", "create_engine"]
