"""Preparing a database and topics for the job, as `txwatch db` and `topics` do."""

from __future__ import annotations

from datetime import date

from txwatch import db, topics
from txwatch.config import Settings


def provision(settings: Settings, secrets: dict[str, str]) -> None:
    """Migrations, roles and July's partitions in the database; the topics."""
    pg = settings.postgres
    db.migrate(
        pg,
        secrets["admin"],
        {pg.writer_user: secrets["writer"], pg.analyst_user: secrets["analyst"]},
    )
    db.ensure_partitions(pg, secrets["admin"], date(2018, 7, 1), date(2018, 7, 31))
    topics.ensure_topics(settings.kafka)
