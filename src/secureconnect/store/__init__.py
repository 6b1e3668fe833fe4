"""Storage: one async SQLAlchemy engine over SQLite (embedded) or PostgreSQL (scale).

Every domain's tables hang off :data:`metadata`; migrations live in ``store/migrations``.
"""

from secureconnect.store.base import metadata
from secureconnect.store.database import Database, PoolStats, StoreUnavailable

__all__ = ["Database", "PoolStats", "StoreUnavailable", "metadata"]
