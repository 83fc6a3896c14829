"""Database set-up: numbered, idempotent migrations with a version table.

Migrations are the files ``sql/NNN_name.sql``. A migration that differs
between TimescaleDB and plain PostgreSQL comes as two files,
``NNN_name.timescale.sql`` and ``NNN_name.postgres.sql``; ``migrate`` takes
the TimescaleDB one when the server offers the extension and the other one
when it does not, and says which path it took. Applied migrations are
recorded in ``schema_migrations`` and never run twice.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import psycopg2
from psycopg2 import sql as pgsql

from txwatch.config import PROJECT_ROOT, PostgresSettings

logger = logging.getLogger(__name__)

SQL_DIR = PROJECT_ROOT / "sql"
_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+?)(?:\.(timescale|postgres))?\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path


@dataclass(frozen=True)
class MigrationReport:
    path_taken: str  # "timescaledb" or "postgresql"
    applied: list[str]
    already: list[str]


def migrations(timescale: bool, sql_dir: Path = SQL_DIR) -> list[Migration]:
    """The migrations for one path, in version order."""
    chosen: dict[int, Migration] = {}
    for path in sorted(sql_dir.glob("[0-9][0-9][0-9]_*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise ValueError(
                f"{path.name} is not named NNN_name[.timescale|.postgres].sql"
            )
        version, name, variant = int(match[1]), match[2], match[3]
        if variant == ("postgres" if timescale else "timescale"):
            continue
        if version in chosen and chosen[version].name != name:
            raise ValueError(f"two migrations share version {version:03d}")
        chosen[version] = Migration(version, name, path)
    return [chosen[v] for v in sorted(chosen)]


def connect(
    pg: PostgresSettings, user: str, password: str, database: str | None = None
):
    return psycopg2.connect(
        host=pg.host,
        port=pg.port,
        dbname=database or pg.database,
        user=user,
        password=password,
        connect_timeout=10,
        options="-c timezone=UTC",
    )


def ensure_database(pg: PostgresSettings, admin_password: str) -> bool:
    """Create the database if it is missing; True when it was created."""
    conn = connect(pg, pg.admin_user, admin_password, database="postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (pg.database,))
            if cur.fetchone():
                return False
            cur.execute(
                pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(pg.database))
            )
            return True
    finally:
        conn.close()


def timescale_available(cur) -> bool:
    cur.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
    return cur.fetchone() is not None


def migrate(
    pg: PostgresSettings,
    admin_password: str,
    role_passwords: dict[str, str],
    force_postgres: bool = False,
) -> MigrationReport:
    """Apply pending migrations and set the roles' passwords."""
    ensure_database(pg, admin_password)
    conn = connect(pg, pg.admin_user, admin_password)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                """
                CREATE TABLE IF NOT EXISTS schema_migrations (
                    version    integer     PRIMARY KEY,
                    name       text        NOT NULL,
                    variant    text        NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now()
                )
                """
            )
            cur.execute(
                "SELECT variant FROM schema_migrations ORDER BY version LIMIT 1"
            )
            row = cur.fetchone()
            if row:  # a database keeps the path it was created on
                timescale = row[0] == "timescaledb"
            else:
                timescale = not force_postgres and timescale_available(cur)
            cur.execute("SELECT version FROM schema_migrations")
            done = {v for (v,) in cur.fetchall()}
        path_taken = "timescaledb" if timescale else "postgresql"

        applied, already = [], []
        for migration in migrations(timescale):
            label = f"{migration.version:03d}_{migration.name}"
            if migration.version in done:
                already.append(label)
                continue
            with conn, conn.cursor() as cur:
                cur.execute(migration.path.read_text())
                cur.execute(
                    "INSERT INTO schema_migrations (version, name, variant) "
                    "VALUES (%s, %s, %s)",
                    (migration.version, migration.name, path_taken),
                )
            applied.append(label)
            logger.info("applied migration %s (%s)", label, path_taken)

        with conn, conn.cursor() as cur:
            for role, password in role_passwords.items():
                cur.execute(
                    pgsql.SQL("ALTER ROLE {} WITH LOGIN PASSWORD %s").format(
                        pgsql.Identifier(role)
                    ),
                    (password,),
                )
        return MigrationReport(path_taken, applied, already)
    finally:
        conn.close()


def ensure_partitions(
    pg: PostgresSettings, admin_password: str, first: date, last: date
) -> int:
    """Create the daily partitions for ``first..last``; returns how many were new."""
    conn = connect(pg, pg.admin_user, admin_password)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT txwatch_ensure_partitions(%s, %s)", (first, last))
            return int(cur.fetchone()[0])
    finally:
        conn.close()
