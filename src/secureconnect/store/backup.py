"""Backups that restore (issue 15, runbook 23.7): a consistent snapshot taken while the platform
serves, with a manifest that says what is in it, and a restore into an empty instance that
checks every file and every table against that manifest before it says "done".

- SQLite (the embedded default): SQLite's online backup API copies the database page by page
  into ``secureconnect.db``; writers carry on meanwhile and the copy is one point in time.
- PostgreSQL: ``pg_dump --format=custom`` inside an exported snapshot, and the manifest's row
  counts are read in that same snapshot, so they describe exactly what the dump holds.
  (Point-in-time recovery needs WAL archiving on the server; see the runbook.)

Messages, keys, memberships and incidents are all rows: the bodies are ciphertext, and a backup
holds nothing the database did not. Attachments in the local blob store are copied beside the
database: every chunk the snapshot's ``blob_chunks`` rows name (ciphertext too; the keys are in
the messages). Chunks never change once received, so the rows decide, not the moment of the
copy. A blob store on S3 is not copied: versioning or replication of the bucket is its backup.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import shutil
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from secureconnect.config import Settings
from secureconnect.errors import Conflict, Invalid, Unavailable

FORMAT = 1
MANIFEST = "manifest.json"
SQLITE_FILE = "secureconnect.db"
PG_FILE = "secureconnect.pgdump"
BLOBS = "blobs"
CHUNKS_QUERY = "SELECT blob_id, n FROM blob_chunks ORDER BY blob_id, n"


@dataclass
class Manifest:
    created_at: int  # ms
    backend: str  # "sqlite" or "postgresql"
    schema_revision: str | None
    tables: dict[str, int]  # rows in each table
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> sha256, bytes
    format: int = FORMAT
    blob_store: str = "local"  # "s3://...": its blobs are not in the backup

    @property
    def total_rows(self) -> int:
        return sum(self.tables.values())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _sqlite_path(settings: Settings) -> Path:
    return (settings.data_dir / SQLITE_FILE).resolve()


def _libpq_url(settings: Settings) -> str:
    """The services' URL as libpq (pg_dump) and asyncpg read it: SQLAlchemy's several
    ``?host=a:5432&host=b:5432`` become ``a:5432,b:5432``, so a backup follows the writable
    primary as the services do."""
    from sqlalchemy import make_url

    url = make_url(settings.effective_database_url)
    hosts = url.query.get("host")
    query = {k: v for k, v in url.query.items() if k != "host"}
    if isinstance(hosts, tuple) and hosts:
        netloc = ",".join(hosts)
        user = url.username or ""
        if url.password:
            user += ":" + quote(url.password, safe="")
        auth = f"{quote(user, safe=':')}@" if user else ""
        params = "&".join(f"{k}={v}" for k, v in query.items() if isinstance(v, str))
        return f"postgresql://{auth}{netloc}/{url.database or ''}" + (
            f"?{params}" if params else ""
        )
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def _count(table: str) -> str:
    """The row count query for a table named by the database's own catalog."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", table):
        raise Invalid("bad_table", f"unexpected table name {table!r}")
    return f'SELECT count(*) FROM "{table}"'  # noqa: S608 (a catalog name, checked above)


def _blob_root(settings: Settings) -> Path | None:
    """The local blob store's folder; None when blobs live in S3."""
    if settings.blob_store != "local":
        return None
    return (settings.blob_dir or settings.data_dir / BLOBS).resolve()


def _chunk_name(blob_id: str, n: int) -> str:
    return f"{BLOBS}/{blob_id[:2]}/{blob_id}/{n}"


def _copy_chunks(root: Path | None, folder: Path, chunks: list[tuple[str, int]]) -> list[str]:
    """Copies the named chunks into the backup; a chunk deleted since the snapshot (its
    attachment deleted for everyone meanwhile) is left out. Returns the names copied."""
    if root is None:
        return []
    copied = []
    for blob_id, n in chunks:
        name = _chunk_name(blob_id, n)
        source = root / name.removeprefix(f"{BLOBS}/")
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copyfile(source, target)
        except FileNotFoundError:
            continue
        copied.append(name)
    return copied


def _sqlite_chunks(path: Path) -> list[tuple[str, int]]:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        try:
            return [(r[0], int(r[1])) for r in db.execute(CHUNKS_QUERY)]
        except sqlite3.OperationalError:  # a database from before attachments
            return []


def _sqlite_counts(path: Path) -> tuple[dict[str, int], str | None]:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        names = [
            r[0]
            for r in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        tables = {n: db.execute(_count(n)).fetchone()[0] for n in names}
        revision = (
            db.execute("SELECT version_num FROM alembic_version").fetchone()[0]
            if "alembic_version" in names
            else None
        )
    return tables, revision


def _finish(folder: Path, manifest: Manifest, keep: int, root: Path) -> Path:
    for name in list(manifest.files):
        path = folder / name
        manifest.files[name] = {"sha256": _sha256(path), "bytes": path.stat().st_size}
    (folder / MANIFEST).write_text(json.dumps(asdict(manifest), indent=2, sort_keys=True))
    # Retention: the newest ``keep`` complete backups stay (a folder without a manifest is a
    # backup that did not finish, and is not counted).
    done = sorted(p for p in root.iterdir() if (p / MANIFEST).exists())
    for old in done[:-keep] if keep > 0 else []:
        shutil.rmtree(old)
    return folder


def _new_folder(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    folder = root / stamp
    suffix = 1
    while folder.exists():
        folder, suffix = root / f"{stamp}-{suffix}", suffix + 1
    folder.mkdir()
    return folder


async def backup(settings: Settings, root: Path, keep: int) -> tuple[Path, Manifest]:
    """Writes ``root/<UTC time>/`` with the data and ``manifest.json``; returns both."""
    folder = await asyncio.to_thread(_new_folder, root)
    now = int(time.time() * 1000)
    if settings.database_url is None:
        source = _sqlite_path(settings)
        if not source.exists():
            raise Invalid("nothing_to_back_up", f"no database at {source}")

        def copy() -> None:
            live, copy = sqlite3.connect(source), sqlite3.connect(folder / SQLITE_FILE)
            try:
                live.backup(copy, pages=256)  # others write between steps; the copy stays whole
                # One self-contained file (the server turns WAL back on when it opens it).
                copy.execute("PRAGMA journal_mode=DELETE")
            finally:
                copy.close()
                live.close()

        await asyncio.to_thread(copy)
        tables, revision = await asyncio.to_thread(_sqlite_counts, folder / SQLITE_FILE)
        chunks = await asyncio.to_thread(_sqlite_chunks, folder / SQLITE_FILE)
        manifest = Manifest(now, "sqlite", revision, tables, {SQLITE_FILE: {}})
    else:
        tables, revision, chunks = await _pg_dump(_libpq_url(settings), folder / PG_FILE)
        manifest = Manifest(now, "postgresql", revision, tables, {PG_FILE: {}})
    manifest.blob_store = settings.blob_store
    copied = await asyncio.to_thread(_copy_chunks, _blob_root(settings), folder, chunks)
    manifest.files.update({name: {} for name in copied})
    return await asyncio.to_thread(_finish, folder, manifest, keep, root), manifest


async def _pg_dump(
    url: str, target: Path
) -> tuple[dict[str, int], str | None, list[tuple[str, int]]]:
    import asyncpg  # the PostgreSQL driver the services use

    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            snapshot = await conn.fetchval("SELECT pg_export_snapshot()")
            tables, revision = await _pg_counts(conn)
            chunks = (
                [(r["blob_id"], r["n"]) for r in await conn.fetch(CHUNKS_QUERY)]
                if "blob_chunks" in tables
                else []
            )
            await _run(
                "pg_dump",
                "--format=custom",
                f"--snapshot={snapshot}",
                "--no-owner",
                f"--file={target}",
                url,
            )
    finally:
        await conn.close()
    return tables, revision, chunks


async def _pg_counts(conn: Any) -> tuple[dict[str, int], str | None]:
    """Rows in every table of the public schema, and the schema's Alembic revision."""
    names = [
        r["tablename"]
        for r in await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
        )
    ]
    tables = {n: await conn.fetchval(_count(n)) for n in names}
    revision = (
        await conn.fetchval("SELECT version_num FROM alembic_version")
        if "alembic_version" in names
        else None
    )
    return tables, revision


async def _run(*argv: str) -> None:
    if shutil.which(argv[0]) is None:
        raise Unavailable(
            "tool_missing", f"{argv[0]} is not installed (apt-get install postgresql-client)"
        )
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise Unavailable(f"{argv[0]}_failed", err.decode(errors="replace").strip()[-500:])


def read_manifest(folder: Path) -> Manifest:
    try:
        data = json.loads((folder / MANIFEST).read_text())
        if data.get("format") != FORMAT:
            raise Invalid("bad_backup", f"backup format {data.get('format')} is not {FORMAT}")
        return Manifest(**data)
    except (OSError, ValueError, TypeError) as error:
        raise Invalid("bad_backup", f"{folder} is not a complete backup: {error}") from error


def verify_files(folder: Path, manifest: Manifest) -> None:
    """Every file the manifest names, whole (before anything is restored from it)."""
    for name, expected in manifest.files.items():
        path = folder / name
        if not path.exists() or _sha256(path) != expected["sha256"]:
            raise Invalid("bad_backup", f"{name} in {folder} does not match the manifest")


async def restore(settings: Settings, folder: Path) -> Manifest:
    """Into an empty instance (a new data folder, or an empty PostgreSQL database): checks the
    files first and every table's row count after; refuses to overwrite data."""
    manifest = read_manifest(folder)
    verify_files(folder, manifest)
    wanted = "sqlite" if settings.database_url is None else "postgresql"
    if manifest.backend != wanted:
        raise Invalid(
            "wrong_backend", f"this backup is of {manifest.backend}; this instance is {wanted}"
        )
    blob_root = _blob_root(settings)
    blob_names = [n for n in manifest.files if n.startswith(f"{BLOBS}/")]
    if blob_names and blob_root is None:
        raise Invalid("wrong_blob_store", "this backup holds attachments; restore to a local store")
    if blob_names and blob_root is not None and blob_root.exists() and any(blob_root.iterdir()):
        raise Conflict("not_empty", f"{blob_root} holds blobs: restore needs an empty instance")
    if wanted == "sqlite":
        target = _sqlite_path(settings)
        if target.exists() and target.stat().st_size > 0:
            raise Conflict("not_empty", f"{target} exists: restore needs an empty instance")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(folder / SQLITE_FILE, target)
        tables, revision = await asyncio.to_thread(_sqlite_counts, target)
    else:
        tables, revision = await _pg_restore(_libpq_url(settings), folder / PG_FILE)
    if tables != manifest.tables or revision != manifest.schema_revision:
        differ = sorted(
            n for n in set(tables) | set(manifest.tables) if tables.get(n) != manifest.tables.get(n)
        )
        raise Conflict("restore_mismatch", f"restored rows differ from the manifest: {differ}")
    if blob_root is not None:
        await asyncio.to_thread(_restore_chunks, folder, blob_root, blob_names)
    return manifest


def _restore_chunks(folder: Path, root: Path, names: list[str]) -> None:
    for name in names:
        target = root / name.removeprefix(f"{BLOBS}/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(folder / name, target)


async def _pg_restore(url: str, source: Path) -> tuple[dict[str, int], str | None]:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        existing = await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        if existing:
            raise Conflict("not_empty", "the database has tables: restore needs an empty one")
        await _run("pg_restore", "--no-owner", "--exit-on-error", f"--dbname={url}", str(source))
        tables, revision = await _pg_counts(conn)
    finally:
        await conn.close()
    return tables, revision
