"""Migrations against the real PostgreSQL server, on throwaway databases.

The plain PostgreSQL path is applied for real. TimescaleDB is not installed on
the test server, so its files are checked by ``run_timescale_path_on_stubs``:
in one transaction on an empty database, it creates a schema ``tsstub`` with
functions named and typed like TimescaleDB's (``create_hypertable``,
``time_bucket``, ``add_continuous_aggregate_policy``,
``add_compression_policy``, ``add_retention_policy``) that check their
arguments against the catalog and record them, rewrites the three kinds of
statement plain PostgreSQL cannot run, executes the whole TimescaleDB path,
inspects the result, and rolls back.

Rewrites (each must match, or the test fails naming the statement):

* ``CREATE EXTENSION ... timescaledb`` is dropped.
* ``CREATE MATERIALIZED VIEW v WITH (timescaledb.continuous, ...) AS q WITH NO
  DATA`` becomes ``CREATE VIEW v AS q`` (a continuous aggregate shows itself
  to users as a view) and records the options.
* ``ALTER TABLE|MATERIALIZED VIEW r SET (timescaledb.x = y, ...)`` becomes a
  call that records the options for ``r``.

Verified that way: every statement parses and executes on PostgreSQL 15 in
order; names, columns and types referenced by the aggregates' queries exist;
named arguments match TimescaleDB's signatures; hypertables are made only of
tables whose unique indexes include the time column, on a ``timestamptz``
column; each continuous aggregate reads exactly one hypertable; policies name
existing hypertables or aggregates, compression is enabled before its policy
and starts after the refresh window; segmentby and orderby name real columns;
option names are known TimescaleDB options; the aggregates have the same
columns and types as the plain path's materialized views; comments and
grants are complete; every ready query runs against that schema.

Not verified: TimescaleDB's own acceptance of the aggregate queries (its
continuous-aggregate restrictions, checked here only by reading its 2.7+
documentation and source), the behaviour of chunks, compression, retention,
refresh and real-time aggregation, ``migrate_data``, and the ``"any"``
argument type of the real policy functions (the stubs use ``anyelement``).
"""

from __future__ import annotations

import json
import re

import conftest_db
import psycopg2
import pytest
from psycopg2 import errors

from txwatch import db
from txwatch.queries import list_queries

pytestmark = pytest.mark.integration

# Fixtures from conftest_db, so that this module runs on its own too.
pg_admin = conftest_db.pg_admin
throwaway_db = conftest_db.throwaway_db
fresh_db = conftest_db.fresh_db
migrated_db = conftest_db.migrated_db

WRITER_TABLES = (
    "scored_transactions",
    "alerts",
    "fraud_labels",
    "rule_hits",
    "drift_metrics",
    "model_versions",
)
AGGREGATES = (
    "alerts_hourly_by_terminal",
    "scores_hourly_by_terminal",
    "rule_hits_hourly_by_rule",
)

# A row each writer table accepts; the second dict is an UPDATE's SET clause.
SAMPLE_ROWS = {
    "scored_transactions": (
        "INSERT INTO scored_transactions (transaction_id, event_time, card_id,"
        " terminal_id, amount, original_amount, currency, score, risk, is_alert,"
        " model_version, features) VALUES ('t1', '2024-05-01T10:00Z', 'c1', 'x1',"
        " 10, 10, 'EUR', 0.4, 0.2, false, 'm1', '{}')",
        "score = 0.5",
    ),
    "alerts": (
        "INSERT INTO alerts (transaction_id, event_time, card_id, terminal_id, amount,"
        " score, risk, model_version) VALUES ('t1', '2024-05-01T10:00Z', 'c1', 'x1',"
        " 10, 0.7, 0.99, 'm1')",
        "risk = 0.98",
    ),
    "fraud_labels": (
        "INSERT INTO fraud_labels (transaction_id, event_time, card_id, terminal_id,"
        " known_at) VALUES ('t1', '2024-05-01T10:00Z', 'c1', 'x1',"
        " '2024-05-03T00:00Z')",
        "known_at = '2024-05-04T00:00Z'",
    ),
    "rule_hits": (
        "INSERT INTO rule_hits (transaction_id, event_time, rule_id, rule_version,"
        " mode, severity, reason, card_id, terminal_id) VALUES ('t1',"
        " '2024-05-01T10:00Z', 'r1', 1, 'active', 'high', 'because', 'c1', 'x1')",
        "reason = 'changed'",
    ),
    "drift_metrics": (
        "INSERT INTO drift_metrics (window_start, window_end, feature, psi,"
        " reference_version, rows) VALUES ('2024-05-01T00:00Z', '2024-05-02T00:00Z',"
        " 'amount', 0.2, 'm1', 100)",
        "psi = 0.3",
    ),
    "model_versions": (
        "INSERT INTO model_versions (version, alias, threshold)"
        " VALUES ('m1', 'champion', 0.6)",
        "notes = 'changed'",
    ),
}


def _connect(pg_admin, settings):
    return pg_admin.connect(settings.database)


def _denied(conn, statement: str) -> bool:
    """Whether ``statement`` fails for lack of privilege (in a savepoint)."""
    with conn.cursor() as cur:
        cur.execute("SAVEPOINT probe")
        try:
            cur.execute(statement)
        except errors.InsufficientPrivilege:
            cur.execute("ROLLBACK TO SAVEPOINT probe")
            return True
        cur.execute("RELEASE SAVEPOINT probe")
        return False


# --- the plain PostgreSQL path -------------------------------------------------


def test_migrations_apply_on_a_fresh_database_and_record_the_postgresql_path(
    pg_admin, fresh_db
):
    report = db.migrate(fresh_db, pg_admin.password, {})

    assert report.path_taken == "postgresql"
    assert report.applied == [
        "001_tables",
        "002_roles",
        "003_feedback_and_rules",
        "004_analytics",
        "005_shadow_scoring",
        "006_fraud_probability",
    ]
    conn = _connect(pg_admin, fresh_db)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT version, name, variant FROM schema_migrations ORDER BY 1"
            )
            rows = cur.fetchall()
    finally:
        conn.close()
    assert [r[0] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert {r[2] for r in rows} == {"postgresql"}


def test_running_the_migrations_again_applies_nothing(pg_admin, migrated_db):
    report = db.migrate(migrated_db, pg_admin.password, {})

    assert report.applied == []
    assert len(report.already) == 6


def test_each_migration_file_can_run_twice(pg_admin, migrated_db):
    conn = _connect(pg_admin, migrated_db)
    try:
        for migration in db.migrations(timescale=False):
            with conn, conn.cursor() as cur:
                cur.execute(migration.path.read_text())
    finally:
        conn.close()


def test_writer_can_insert_and_update_but_not_delete_truncate_or_create(
    pg_admin, migrated_db
):
    conn = _connect(pg_admin, migrated_db)
    try:
        with conn.cursor() as cur:
            cur.execute("SET ROLE txwatch_writer")
            for table, (insert, update) in SAMPLE_ROWS.items():
                cur.execute(insert)
                cur.execute(f"UPDATE {table} SET {update}")
                assert cur.rowcount == 1, table
            cur.execute("SELECT txwatch_refresh_aggregates()")
            assert cur.fetchone() == (3,)
        for table in WRITER_TABLES:
            assert _denied(conn, f"DELETE FROM {table}"), table
            assert _denied(conn, f"TRUNCATE {table}"), table
        assert _denied(conn, "CREATE TABLE writer_made (x int)")
        assert _denied(conn, "CREATE VIEW writer_view AS SELECT 1 AS x")
        assert _denied(conn, "ALTER TABLE alerts ADD COLUMN extra int")
        assert _denied(conn, "DROP TABLE fraud_labels")
        assert _denied(conn, "REFRESH MATERIALIZED VIEW alerts_hourly_by_terminal")
    finally:
        conn.rollback()
        conn.close()


_SHADOW_INSERT = (
    "INSERT INTO scored_transactions (transaction_id, event_time, card_id,"
    " terminal_id, amount, original_amount, currency, score, risk, is_alert,"
    " model_version, features, challenger_score, challenger_version,"
    " challenger_alert) VALUES (%s, '2024-05-01T10:00:00Z', 'c', 't', 1, 1, 'EUR',"
    " 0.5, 0.5, false, 'v1', '{}', %s, %s, %s)"
)


def test_shadow_columns_hold_all_three_values_or_none(pg_admin, migrated_db):
    conn = _connect(pg_admin, migrated_db)
    try:
        with conn.cursor() as cur:
            cur.execute(_SHADOW_INSERT, ("none", None, None, None))
            cur.execute(_SHADOW_INSERT, ("all", 0.7, "v2", True))
            for bad in ((None, "v2", True), (0.7, None, None), (1.5, "v2", False)):
                cur.execute("SAVEPOINT bad")
                with pytest.raises(errors.CheckViolation):
                    cur.execute(_SHADOW_INSERT, ("bad", *bad))
                cur.execute("ROLLBACK TO SAVEPOINT bad")
            cur.execute(
                "SELECT transaction_id, challenger_version FROM scored_transactions"
                " ORDER BY 1"
            )
            assert cur.fetchall() == [("all", "v2"), ("none", None)]
    finally:
        conn.rollback()
        conn.close()


def test_analyst_can_only_select(pg_admin, migrated_db):
    conn = _connect(pg_admin, migrated_db)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid ="
                " c.relnamespace WHERE n.nspname = 'public'"
                " AND c.relkind IN ('r', 'p', 'v', 'm')"
            )
            relations = [r[0] for r in cur.fetchall()]
            cur.execute("SET ROLE analyst")
            for relation in relations:
                cur.execute(f"SELECT count(*) FROM {relation}")
        assert set(AGGREGATES) <= set(relations)
        for table, (insert, update) in SAMPLE_ROWS.items():
            assert _denied(conn, insert), table
            assert _denied(conn, f"UPDATE {table} SET {update}"), table
            assert _denied(conn, f"DELETE FROM {table}"), table
            assert _denied(conn, f"TRUNCATE {table}"), table
        assert _denied(conn, "CREATE TABLE analyst_made (x int)")
        assert _denied(conn, "SELECT txwatch_refresh_aggregates()")
        assert _denied(
            conn, "SELECT txwatch_ensure_partitions('2024-01-01', '2024-01-01')"
        )
    finally:
        conn.rollback()
        conn.close()


def test_aggregates_refresh_concurrently_and_see_new_rows(pg_admin, migrated_db):
    conn = _connect(pg_admin, migrated_db)
    try:
        with conn, conn.cursor() as cur:
            for insert, _ in SAMPLE_ROWS.values():
                cur.execute(insert)
            cur.execute("SELECT txwatch_refresh_aggregates()")
        with conn, conn.cursor() as cur:
            cur.execute(
                "SELECT relname FROM pg_class c JOIN pg_index i ON i.indrelid = c.oid"
                " WHERE c.relkind = 'm' AND i.indisunique"
            )
            assert {r[0] for r in cur.fetchall()} == set(AGGREGATES)
            cur.execute("SELECT count(*) FROM pg_class WHERE relkind = 'm'")
            assert cur.fetchone() == (3,)
            # Populated now, so this refresh takes the CONCURRENTLY branch.
            cur.execute("SELECT txwatch_refresh_aggregates()")
            cur.execute(
                "SELECT bucket, terminal_id, transactions, p95_score"
                " FROM scores_hourly_by_terminal"
            )
            (bucket, terminal, transactions, p95) = cur.fetchone()
            cur.execute("SELECT hits FROM rule_hits_hourly_by_rule")
            assert cur.fetchone() == (1,)
            cur.execute("SELECT alerts FROM alerts_hourly_by_terminal")
            assert cur.fetchone() == (1,)
    finally:
        conn.close()
    assert bucket.isoformat() == "2024-05-01T10:00:00+00:00"
    assert (terminal, transactions, p95) == ("x1", 1, 0.4)


def undocumented(cur) -> list[str]:
    """Tables, views and columns of schema public without a comment."""
    cur.execute(
        """
        SELECT c.relname
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm')
          AND NOT c.relispartition
          AND obj_description(c.oid, 'pg_class') IS NULL
        UNION ALL
        SELECT c.relname || '.' || a.attname
        FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_attribute a
          ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm')
          AND NOT c.relispartition
          AND col_description(c.oid, a.attnum) IS NULL
        UNION ALL
        SELECT p.oid::regprocedure::text
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'public' AND starts_with(p.proname, 'txwatch_')
          AND obj_description(p.oid, 'pg_proc') IS NULL
        ORDER BY 1
        """
    )
    return [r[0] for r in cur.fetchall()]


def test_every_table_view_column_and_function_has_a_comment(pg_admin, migrated_db):
    conn = _connect(pg_admin, migrated_db)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT txwatch_ensure_partitions('2024-05-01', '2024-05-02')")
            missing = undocumented(cur)
    finally:
        conn.close()
    assert missing == []


# --- the TimescaleDB path, on stubs --------------------------------------------

STUBS = r"""
CREATE SCHEMA tsstub;
CREATE TABLE tsstub.calls (
    seq      serial PRIMARY KEY,
    fn       text     NOT NULL,
    relation regclass NOT NULL,
    args     jsonb    NOT NULL
);

CREATE FUNCTION tsstub.is_kind(rel regclass, kind text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT FROM tsstub.calls WHERE relation = rel AND fn = kind)
$$;

CREATE FUNCTION tsstub.create_hypertable(
    relation regclass, time_column_name name, partitioning_column name = NULL,
    number_partitions integer = NULL, associated_schema_name name = NULL,
    associated_table_prefix name = NULL, chunk_time_interval anyelement = NULL::bigint,
    create_default_indexes boolean = true, if_not_exists boolean = false,
    partitioning_func regproc = NULL, migrate_data boolean = false,
    time_partitioning_func regproc = NULL)
RETURNS TABLE (hypertable_id integer, schema_name name, table_name name,
               created boolean)
LANGUAGE plpgsql AS $$
DECLARE
    column_type text;
    bad_index text;
BEGIN
    SELECT format_type(atttypid, atttypmod) INTO column_type FROM pg_attribute
    WHERE attrelid = relation AND attname = time_column_name AND NOT attisdropped;
    IF column_type IS DISTINCT FROM 'timestamp with time zone' THEN
        RAISE 'create_hypertable(%): time column % has type %, not timestamptz',
            relation, time_column_name, column_type;
    END IF;
    SELECT i.indexrelid::regclass::text INTO bad_index
    FROM pg_index i
    WHERE i.indrelid = relation AND i.indisunique
      AND NOT EXISTS (SELECT FROM pg_attribute a
                      WHERE a.attrelid = relation AND a.attname = time_column_name
                        AND a.attnum = ANY (i.indkey));
    IF bad_index IS NOT NULL THEN
        RAISE 'create_hypertable(%): unique index % lacks the time column %',
            relation, bad_index, time_column_name;
    END IF;
    IF tsstub.is_kind(relation, 'hypertable') AND NOT if_not_exists THEN
        RAISE 'create_hypertable(%): already a hypertable', relation;
    END IF;
    INSERT INTO tsstub.calls (fn, relation, args) VALUES ('hypertable', relation,
        jsonb_build_object('time_column', time_column_name,
                           'chunk_time_interval', chunk_time_interval::text,
                           'migrate_data', migrate_data));
    RETURN QUERY SELECT 1, 'public'::name, relation::text::name, true;
END $$;

CREATE FUNCTION tsstub.time_bucket(bucket_width interval, ts timestamptz)
RETURNS timestamptz LANGUAGE sql IMMUTABLE AS $$
    SELECT date_bin(bucket_width, ts, timestamptz '2000-01-03 00:00:00+00')
$$;

CREATE FUNCTION tsstub.add_continuous_aggregate_policy(
    continuous_aggregate regclass, start_offset anyelement, end_offset anyelement,
    schedule_interval interval, if_not_exists boolean = false,
    initial_start timestamptz = NULL, timezone text = NULL,
    include_tiered_data boolean = NULL, buckets_per_batch integer = NULL,
    max_batches_per_execution integer = NULL, refresh_newest_first boolean = NULL)
RETURNS integer LANGUAGE plpgsql AS $$
BEGIN
    IF NOT tsstub.is_kind(continuous_aggregate, 'continuous_aggregate') THEN
        RAISE 'refresh policy on %, which is not a continuous aggregate',
            continuous_aggregate;
    END IF;
    IF start_offset::text::interval <= end_offset::text::interval THEN
        RAISE 'refresh policy on %: start_offset % must exceed end_offset %',
            continuous_aggregate, start_offset, end_offset;
    END IF;
    INSERT INTO tsstub.calls (fn, relation, args) VALUES ('refresh_policy',
        continuous_aggregate, jsonb_build_object('start_offset', start_offset::text,
        'end_offset', end_offset::text, 'schedule_interval', schedule_interval::text));
    RETURN 1;
END $$;

CREATE FUNCTION tsstub.record_alter(relation regclass, options jsonb)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF NOT (tsstub.is_kind(relation, 'hypertable')
            OR tsstub.is_kind(relation, 'continuous_aggregate')) THEN
        RAISE 'ALTER ... SET (timescaledb...) on %, neither hypertable nor aggregate',
            relation;
    END IF;
    INSERT INTO tsstub.calls (fn, relation, args)
    VALUES ('set_options', relation, options);
END $$;

CREATE FUNCTION tsstub.add_compression_policy(
    hypertable regclass, compress_after anyelement = NULL,
    if_not_exists boolean = false,
    schedule_interval interval = NULL, initial_start timestamptz = NULL,
    timezone text = NULL, compress_created_before interval = NULL)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    refresh_start interval;
BEGIN
    IF NOT EXISTS (SELECT FROM tsstub.calls WHERE relation = hypertable
                   AND fn = 'set_options' AND args ->> 'compress' IN ('', 'true')) THEN
        RAISE 'compression policy on % before compression was enabled', hypertable;
    END IF;
    SELECT (args ->> 'start_offset')::interval INTO refresh_start FROM tsstub.calls
    WHERE relation = hypertable AND fn = 'refresh_policy';
    IF refresh_start IS NOT NULL
       AND compress_after::text::interval <= refresh_start THEN
        RAISE 'compression of % after % starts inside its refresh window %',
            hypertable, compress_after, refresh_start;
    END IF;
    INSERT INTO tsstub.calls (fn, relation, args) VALUES ('compression_policy',
        hypertable, jsonb_build_object('compress_after', compress_after::text));
    RETURN 1;
END $$;

CREATE FUNCTION tsstub.add_retention_policy(
    relation regclass, drop_after anyelement = NULL, if_not_exists boolean = false,
    schedule_interval interval = NULL, initial_start timestamptz = NULL,
    timezone text = NULL, drop_created_before interval = NULL)
RETURNS integer LANGUAGE plpgsql AS $$
BEGIN
    IF NOT (tsstub.is_kind(relation, 'hypertable')
            OR tsstub.is_kind(relation, 'continuous_aggregate')) THEN
        RAISE 'retention policy on %, neither hypertable nor aggregate', relation;
    END IF;
    INSERT INTO tsstub.calls (fn, relation, args) VALUES ('retention_policy',
        relation, jsonb_build_object('drop_after', drop_after::text));
    RETURN 1;
END $$;
"""

# Options of ALTER TABLE / MATERIALIZED VIEW ... SET and of continuous aggregates
# that TimescaleDB 2.x documents.
KNOWN_OPTIONS = {
    "compress",
    "compress_segmentby",
    "compress_orderby",
    "compress_chunk_time_interval",
    "continuous",
    "materialized_only",
    "create_group_indexes",
    "finalized",
}

_EXTENSION = re.compile(
    r"CREATE\s+EXTENSION\s+(?:IF\s+NOT\s+EXISTS\s+)?timescaledb[^;]*;", re.I
)
_CAGG = re.compile(
    r"CREATE\s+MATERIALIZED\s+VIEW\s+(?:IF\s+NOT\s+EXISTS\s+)?(?P<name>\w+)\s+"
    r"WITH\s*\((?P<options>[^)]*)\)\s+AS\s+(?P<query>.*?)\s+WITH\s+(?:NO\s+)?DATA\s*;",
    re.I | re.S,
)
_ALTER = re.compile(
    r"ALTER\s+(?:TABLE|MATERIALIZED\s+VIEW)\s+(?P<name>\w+)\s+SET\s*\("
    r"(?P<options>\s*timescaledb\.[^;]*?)\)\s*;",
    re.I | re.S,
)
_OPTION = re.compile(r"timescaledb\.(\w+)(?:\s*=\s*('(?:[^']|'')*'|\w+))?", re.I)


def _options(text: str) -> dict[str, str]:
    options = {}
    for name, value in _OPTION.findall(text):
        assert name in KNOWN_OPTIONS, f"unknown TimescaleDB option timescaledb.{name}"
        options[name] = value.strip("'").replace("''", "'")
    return options


def _literal(value: dict) -> str:
    return "'" + json.dumps(value).replace("'", "''") + "'"


def rewrite_for_stubs(text: str) -> str:
    """The TimescaleDB-only statements of ``text`` replaced as described above."""
    text = _EXTENSION.sub("", text)

    def cagg(match: re.Match) -> str:
        options = _options(match["options"])
        assert "continuous" in options, f"{match['name']}: not a continuous aggregate"
        return (
            f"CREATE VIEW {match['name']} AS {match['query']};\n"
            "INSERT INTO tsstub.calls (fn, relation, args) VALUES "
            f"('continuous_aggregate', '{match['name']}', {_literal(options)});"
        )

    def alter(match: re.Match) -> str:
        options = _options(match["options"])
        return f"SELECT tsstub.record_alter('{match['name']}', {_literal(options)});"

    text = _ALTER.sub(alter, _CAGG.sub(cagg, text))
    code = re.sub(r"--[^\n]*", "", text)
    leftover = re.search(r"[^;]*timescaledb\.[^;]*;", code)
    assert leftover is None, f"statement not handled by the stubs: {leftover[0]}"
    return text


def _columns(cur, relation: str) -> list[tuple[str, str]]:
    cur.execute(
        "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute"
        " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped"
        " ORDER BY attnum",
        (relation,),
    )
    return cur.fetchall()


def test_timescale_files_run_against_stubs_of_timescaledb(
    pg_admin, fresh_db, migrated_db
):
    plain = _connect(pg_admin, migrated_db)
    try:
        with plain.cursor() as cur:
            plain_columns = {name: _columns(cur, name) for name in AGGREGATES}
    finally:
        plain.close()

    conn = _connect(pg_admin, fresh_db)
    try:
        with conn.cursor() as cur:
            cur.execute(STUBS)
            cur.execute("SET LOCAL search_path = public, tsstub")
            for migration in db.migrations(timescale=True):
                try:
                    cur.execute(rewrite_for_stubs(migration.path.read_text()))
                except psycopg2.Error as exc:
                    pytest.fail(f"{migration.path.name} fails on the stubs: {exc}")
            _check_timescale_schema(cur, plain_columns)
            cur.execute("SET LOCAL ROLE analyst")
            for query in list_queries():
                params = {p.name: "x" for p in query.parameters if p.required}
                cur.execute(query.sql, query.bind(params))
    finally:
        conn.rollback()
        conn.close()


def _check_timescale_schema(cur, plain_columns: dict) -> None:
    cur.execute("SELECT fn, relation::text, args FROM tsstub.calls ORDER BY seq")
    calls = cur.fetchall()

    def relations(kind: str) -> set[str]:
        return {rel for fn, rel, _ in calls if fn == kind}

    hypertables = relations("hypertable")
    assert hypertables == {
        "scored_transactions",
        "alerts",
        "rule_hits",
        "drift_metrics",
    }
    assert relations("continuous_aggregate") == set(AGGREGATES)
    assert relations("refresh_policy") == set(AGGREGATES)
    compressed = {"scored_transactions", "alerts", "rule_hits", *AGGREGATES}
    assert relations("compression_policy") == compressed
    assert relations("retention_policy") == compressed

    for fn, relation, args in calls:
        if fn == "set_options":
            for key in ("compress_segmentby", "compress_orderby"):
                for entry in filter(None, args.get(key, "").split(",")):
                    column = entry.split()[0]
                    cur.execute(
                        "SELECT 1 FROM pg_attribute WHERE attrelid = %s::regclass"
                        " AND attname = %s",
                        (relation, column),
                    )
                    assert cur.fetchone(), f"{relation}: {key} names no column {column}"

    for view in AGGREGATES:
        cur.execute(
            "SELECT DISTINCT d.refobjid::regclass::text FROM pg_rewrite r"
            " JOIN pg_depend d"
            " ON d.objid = r.oid AND d.classid = 'pg_rewrite'::regclass"
            " WHERE r.ev_class = %s::regclass AND d.refobjid <> %s::regclass"
            " AND d.refclassid = 'pg_class'::regclass",
            (view, view),
        )
        sources = {r[0] for r in cur.fetchall()}
        assert len(sources) == 1 and sources <= hypertables, (view, sources)
        assert _columns(cur, view) == plain_columns[view], view
        cur.execute("SELECT has_table_privilege('analyst', %s, 'SELECT')", (view,))
        assert cur.fetchone() == (True,), view

    cur.execute("SELECT txwatch_refresh_aggregates()")
    assert cur.fetchone() == (0,)
    assert undocumented(cur) == []
