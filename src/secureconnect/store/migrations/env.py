"""Alembic environment: runs on the connection :func:`secureconnect.store.migrate.upgrade` gives."""

from alembic import context

import secureconnect.accounts.models
import secureconnect.blobs.models
import secureconnect.chat.models
import secureconnect.guard.models
import secureconnect.incidents.models
import secureconnect.keys.models
import secureconnect.ops.models
import secureconnect.profiles.models
import secureconnect.video.models  # noqa: F401
from secureconnect.store.base import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `secureconnect migrate`")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
