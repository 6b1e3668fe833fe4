"""Deploy history. A deploy is a role starting on a release it was not on before; restarts of the
same release are not deploys (a crash loop must not look like a rollout)."""

from __future__ import annotations

from sqlalchemy import select

from secureconnect.clock import SYSTEM_CLOCK, Clock
from secureconnect.ops.models import deploys
from secureconnect.ops.schemas import Deploy
from secureconnect.store import Database


class DeployLog:
    def __init__(self, db: Database, clock: Clock = SYSTEM_CLOCK) -> None:
        self.db = db
        self.clock = clock

    async def record(self, role: str, release: str, host: str) -> bool:
        """Note the start of ``release``; True when it is a deploy (a new release for the role)."""
        async with self.db.write() as conn:
            last = await conn.scalar(
                select(deploys.c.version)
                .where(deploys.c.role == role)
                .order_by(deploys.c.id.desc())
                .limit(1)
            )
            if last == release:
                return False
            await conn.execute(
                deploys.insert().values(
                    role=role, version=release, host=host, started_at=self.clock.now_ms()
                )
            )
        return True

    async def since(self, seconds: int) -> list[Deploy]:
        """Deploys in the last ``seconds``, newest first, each with the release it replaced."""
        cutoff = self.clock.now_ms() - seconds * 1000
        async with self.db.read() as conn:
            rows = (await conn.execute(select(deploys).order_by(deploys.c.id))).all()
        previous: dict[str, str | None] = {}
        out: list[Deploy] = []
        for row in rows:
            if row.started_at >= cutoff:
                out.append(
                    Deploy(
                        role=row.role,
                        release=row.version,
                        previous=previous.get(row.role),
                        host=row.host,
                        started_at=row.started_at,
                    )
                )
            previous[row.role] = row.version
        return list(reversed(out))
