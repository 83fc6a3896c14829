"""Ready queries: the SQL files of ``sql/queries``, one question each.

A ready query file starts with comment lines that state the question it
answers, followed by one line per parameter::

    -- @param NAME TYPE [= DEFAULT]  what it means

``TYPE`` is one of ``date``, ``timestamptz``, ``int``, ``float`` or ``text``. A
parameter without a default is required; ``= null`` makes it optional and
leaves the choice to the query (its description says what it picks, typically
"the latest day with data"). In the SQL a parameter appears as a psycopg2
named placeholder, ``%(NAME)s``, usually followed by a cast; values are always
sent as bound parameters and never pasted into the text. A file must declare
every placeholder it uses and use every parameter it declares, and may contain
no other ``%`` sign.

Times are ``timestamptz`` and days are UTC days, whatever the session time
zone. ``run_query`` executes in the caller's connection and transaction;
``main_queries`` (the ``txwatch query`` command) connects as the analyst role
in a read-only session.

Limitations: a query file is one statement; results are fetched whole, so the
queries bound their output with a period or a ``top`` parameter.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

from txwatch.config import PROJECT_ROOT, Settings, load

logger = logging.getLogger(__name__)

QUERY_DIR = PROJECT_ROOT / "sql" / "queries"
TYPES = ("date", "timestamptz", "int", "float", "text")

_PARAM_LINE = re.compile(
    r"^--\s*@param\s+(?P<name>[a-z_][a-z0-9_]*)\s+(?P<kind>[a-z]+)"
    r"(?:\s*=\s*(?P<default>\S+))?\s*(?P<description>.*)$"
)
_PLACEHOLDER = re.compile(r"%\(([a-z_][a-z0-9_]*)\)s")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class QueryError(ValueError):
    """A ready query is unknown, malformed, or given bad parameters."""


@dataclass(frozen=True)
class Parameter:
    """One declared parameter of a ready query."""

    name: str
    kind: str
    required: bool
    default: object
    description: str

    def convert(self, value: object) -> object:
        """``value`` as the Python type psycopg2 binds for ``kind``.

        Strings (from the command line) are parsed; values already of the
        right type pass through. Raises ``QueryError`` naming the parameter.
        """
        if value is None:
            return None
        try:
            return _CONVERTERS[self.kind](value)
        except (TypeError, ValueError) as exc:
            raise QueryError(
                f"parameter {self.name!r} must be a {self.kind}, got {value!r}: {exc}"
            ) from exc


@dataclass(frozen=True)
class ReadyQuery:
    """A parsed query file: its question, its parameters and its SQL."""

    name: str
    question: str
    parameters: tuple[Parameter, ...]
    sql: str
    path: Path

    def bind(self, params: Mapping[str, object] | None = None) -> dict[str, object]:
        """The full parameter mapping for ``cursor.execute``.

        Fills defaults, converts values, and rejects unknown names and missing
        required parameters.
        """
        params = dict(params or {})
        known = {p.name: p for p in self.parameters}
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise QueryError(
                f"query {self.name!r} has no parameter(s) {unknown}; "
                f"it takes {sorted(known) or 'none'}"
            )
        bound = {}
        for parameter in self.parameters:
            if parameter.name in params:
                bound[parameter.name] = parameter.convert(params[parameter.name])
            elif parameter.required:
                raise QueryError(
                    f"query {self.name!r} needs parameter {parameter.name!r} "
                    f"({parameter.kind}: {parameter.description}); pass "
                    f"--param {parameter.name}=VALUE"
                )
            else:
                bound[parameter.name] = parameter.default
        return bound


def _to_date(value: object) -> date:
    if isinstance(value, datetime):
        raise TypeError("a datetime is not a day; pass a date")
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value))


def _to_timestamptz(value: object) -> datetime:
    parsed = (
        value
        if isinstance(value, datetime)
        else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    )
    if parsed.tzinfo is None:
        raise ValueError("needs a zone offset, for example 2024-05-01T00:00:00Z")
    return parsed


def _to_int(value: object) -> int:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise TypeError("not a whole number")
    return int(value)


_CONVERTERS = {
    "date": _to_date,
    "timestamptz": _to_timestamptz,
    "int": _to_int,
    "float": float,
    "text": str,
}


def parse_query(path: Path) -> ReadyQuery:
    """Read and check one query file; raises ``QueryError`` on a bad file."""
    name = path.stem
    if not _NAME.match(name):
        raise QueryError(f"{path.name}: a query name must match {_NAME.pattern}")
    text = path.read_text()
    question_lines: list[str] = []
    parameters: list[Parameter] = []
    for line in text.splitlines():
        if not line.startswith("--"):
            break
        match = _PARAM_LINE.match(line)
        if match:
            parameters.append(_parameter(path, match))
        elif not parameters:
            question_lines.append(line[2:].strip())
    question = " ".join(part for part in question_lines if part)
    if not question:
        raise QueryError(
            f"{path.name}: must start with a comment saying what it answers"
        )

    declared = [p.name for p in parameters]
    used = set(_PLACEHOLDER.findall(text))
    if len(set(declared)) != len(declared):
        raise QueryError(f"{path.name}: a parameter is declared twice in {declared}")
    if used != set(declared):
        raise QueryError(
            f"{path.name}: placeholders {sorted(used)} differ from the declared "
            f"parameters {sorted(declared)}; declare each one with -- @param"
        )
    if "%" in _PLACEHOLDER.sub("", text):
        raise QueryError(
            f"{path.name}: a '%' outside a %(name)s placeholder would break "
            "parameter binding; write it as '%%' or avoid it"
        )
    return ReadyQuery(name, question, tuple(parameters), text, path)


def _parameter(path: Path, match: re.Match) -> Parameter:
    kind = match["kind"]
    if kind not in TYPES:
        raise QueryError(
            f"{path.name}: parameter {match['name']!r} has type {kind!r}; "
            f"use one of {TYPES}"
        )
    parameter = Parameter(
        name=match["name"],
        kind=kind,
        required=match["default"] is None,
        default=None,
        description=match["description"].strip(),
    )
    if match["default"] is None or match["default"] == "null":
        return parameter
    return Parameter(
        parameter.name,
        kind,
        False,
        parameter.convert(match["default"]),
        parameter.description,
    )


def list_queries(query_dir: Path = QUERY_DIR) -> list[ReadyQuery]:
    """Every ready query, by name."""
    return [parse_query(path) for path in sorted(query_dir.glob("*.sql"))]


def load_query(name: str, query_dir: Path = QUERY_DIR) -> ReadyQuery:
    """The ready query called ``name``; raises ``QueryError`` if there is none."""
    path = query_dir / f"{name}.sql"
    if not _NAME.match(name) or not path.is_file():
        available = ", ".join(q.name for q in list_queries(query_dir))
        raise QueryError(f"no ready query named {name!r}; available: {available}")
    return parse_query(path)


def run_query(
    conn,
    name: str,
    params: Mapping[str, object] | None = None,
    query_dir: Path = QUERY_DIR,
) -> tuple[list[str], list[tuple]]:
    """Run the ready query ``name`` on ``conn``: ``(column names, rows)``.

    ``params`` maps parameter names to values, either of the declared type or
    as strings to parse; omitted optional parameters take their defaults.
    """
    query = load_query(name, query_dir)
    bound = query.bind(params)
    with conn.cursor() as cur:
        cur.execute(query.sql, bound)
        columns = [column.name for column in cur.description]
        rows = cur.fetchall()
    logger.debug("ran query %s with %s: %d rows", name, bound, len(rows))
    return columns, rows


def format_value(value: object) -> str:
    """A cell as text: floats to 4 decimals, times in ISO form, NULL as ''."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return str(value)


def format_table(columns: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Rows as an aligned plain-text table with a header line."""
    cells = [[format_value(v) for v in row] for row in rows]
    widths = [
        max([len(column)] + [len(row[i]) for row in cells])
        for i, column in enumerate(columns)
    ]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)),
        "  ".join("-" * w for w in widths),
    ]
    for row in cells:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    return "\n".join(line.rstrip() for line in lines)


def _parse_param(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"--param takes NAME=VALUE, got {text!r}")
    return name.strip(), value


def _describe(queries: Sequence[ReadyQuery]) -> str:
    blocks = []
    for query in queries:
        lines = [f"{query.name}\n    {query.question}"]
        for p in query.parameters:
            if p.required:
                default = "required"
            elif p.default is None:
                default = "optional"
            else:
                default = f"default {p.default}"
            lines.append(f"    --param {p.name}=<{p.kind}>  {default}; {p.description}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def main_queries(argv: Sequence[str] | None = None) -> int:
    """``txwatch query``: list the ready queries or run one and print its rows.

    ``argv`` holds the arguments after the ``query`` sub-command, for example
    ``["riskiest_terminals", "--param", "day=2024-05-01"]`` or ``["--list"]``.
    Connects as the analyst role (``postgres.analyst_user``) with the password
    from the environment variable named by ``postgres.analyst_password_env``.
    Returns the process exit code.
    """
    parser = argparse.ArgumentParser(
        prog="txwatch query",
        description="Run a ready analyst query from sql/queries.",
    )
    parser.add_argument("name", nargs="?", help="the query to run")
    parser.add_argument("--list", action="store_true", help="list the queries")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        type=_parse_param,
        metavar="NAME=VALUE",
        help="a query parameter; repeat for several",
    )
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table")
    parser.add_argument(
        "--config", help="configuration file (default conf/txwatch.yaml)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )

    if args.list:
        print(_describe(list_queries()))
        return 0
    if not args.name:
        parser.error("give the name of a query, or --list to see them")

    try:
        query = load_query(args.name)
        params = query.bind(dict(args.param))
    except QueryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    from txwatch.db import connect  # psycopg2 only where a database is used

    settings = load(args.config)
    pg = settings.postgres
    conn = connect(pg, pg.analyst_user, Settings.secret(pg.analyst_password_env))
    try:
        conn.set_session(readonly=True)
        columns, rows = run_query(conn, query.name, params)
    finally:
        conn.close()

    if args.format == "json":
        records = [dict(zip(columns, row, strict=True)) for row in rows]
        print(json.dumps(records, indent=2, default=format_value))
    elif args.format == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows([format_value(v) for v in row] for row in rows)
    else:
        print(format_table(columns, rows))
        print(f"({len(rows)} rows)")
    return 0
