"""The PostgreSQL writer, at COPY speed: COPY the batch (binary) into a temporary staging table
(or, for rows another table holds, INSERT … SELECT them into it), then one INSERT … SELECT …
ON CONFLICT DO UPDATE … WHERE the compared columns are distinct, RETURNING whether each row was
inserted (xmax = 0) or updated; the rest of the batch, if any, was unchanged and gets its
last_seen stamped by a second INSERT … ON CONFLICT from the stage. Both go through the unique
index on (tenant, key): no statement whose plan depends on the table's size or statistics.
"""

import json
import threading
from dataclasses import dataclass
from functools import lru_cache
from operator import itemgetter
from weakref import WeakKeyDictionary

from django.core.exceptions import EmptyResultSet
from django.db import connection, transaction
from psycopg.types.json import set_json_dumps

from .base import Outcome, Writer

# Django's column types → the names psycopg's binary COPY dumps them as (the width must match).
COPY_TYPES = {"integer": "int4", "bigint": "int8", "smallint": "int2", "boolean": "bool", "text": "text",
              "jsonb": "jsonb", "timestamp with time zone": "timestamptz", "double precision": "float8"}


def _copy_type(field) -> str:
    db_type = field.db_type(connection)
    if db_type.startswith("varchar"):
        return "text"
    return COPY_TYPES[db_type]


def _defaulted(field, given) -> bool:
    """A column the writer fills with its default: not given, not bookkeeping, and not nullable
    without a default (those stay NULL)."""
    bookkeeping = field.primary_key or field.name in ("tenant", "first_seen", "last_seen")
    return not bookkeeping and not {field.name, field.attname} & set(given) and (field.has_default() or not field.null)


def _quoted(names) -> str:
    return ", ".join(connection.ops.quote_name(n) for n in names)


# Fresh rows have no statistics until ANALYZE (autovacuum may be late): the planner then reads
# a whole tenant through its tenant_id index for a lookup by key, and a connection's foreign-key
# checks keep a sequential scan planned while the table was small, each check reading the whole
# table at COMMIT. Analyse as a table grows (ANALYZE also makes the cached plans be made again).
ANALYZE_EVERY_ROWS = 20_000
ANALYZE_FIRST_ROWS = 1_000  # a table that starts empty is analysed at 1,000 rows gained, then at each doubling
_created_since_analyze: dict[str, int] = {}
_created_by_last_analyze: dict[str, int] = {}
_analyze_counts_lock = threading.Lock()  # steps running side by side in one process count into the same tables


def _analyze_if_grown(table: str, created: int) -> None:
    """ANALYZE once the table gained as many rows as it had gained by its last ANALYZE here
    (at least ANALYZE_FIRST_ROWS, at most ANALYZE_EVERY_ROWS): early and often while it is
    small, when a plan made for an empty table costs most, then every ANALYZE_EVERY_ROWS."""
    with _analyze_counts_lock:
        grown = _created_since_analyze.get(table, 0) + created
        before = _created_by_last_analyze.get(table, 0)
        due = grown >= min(ANALYZE_EVERY_ROWS, max(ANALYZE_FIRST_ROWS, before))
        if due:  # counted as done now, so that another thread does not analyse the same growth
            _created_by_last_analyze[table] = before + grown
            grown = 0
        _created_since_analyze[table] = grown
    if due:
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {connection.ops.quote_name(table)}")


# Per connection, the stage tables known to exist and be empty: a temporary table lives as long
# as its connection, and its rows go at commit. Creating or emptying one costs a round trip and
# catalogue work per batch, worth skipping when nothing can be there.
_clean_stages: WeakKeyDictionary = WeakKeyDictionary()


@lru_cache(maxsize=4096)
def _dumped_texts(texts: tuple[str, ...]) -> str:
    return json.dumps(list(texts))


def _dumps(value) -> str:
    """json.dumps, remembering lists of text: rows repeat them (an application's scopes), and
    dumping each row's anew was a tenth of a sync's CPU."""
    if type(value) is list and all(type(item) is str for item in value):
        return _dumped_texts(tuple(value))
    return json.dumps(value)


def _clean_stages_of_this_connection() -> set:
    """The connection's clean stages (see _clean_stages); the first time, its JSON dumps are set."""
    raw = connection.connection
    if raw not in _clean_stages:
        set_json_dumps(_dumps, raw)  # what COPY's jsonb columns are dumped with, on this connection
    return _clean_stages.setdefault(raw, set())


def _stage_table(cursor, stage: str, table: str, columns: list[str]) -> None:
    """Make sure the stage exists and is empty: known so after the last transaction that used it
    committed; otherwise (first use on this connection, a rollback that may have taken the table
    with it, a second use in one transaction) created if need be and emptied."""
    qn = connection.ops.quote_name
    clean = _clean_stages_of_this_connection()
    if stage in clean:
        clean.discard(stage)
    else:
        cursor.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {qn(stage)} ON COMMIT DELETE ROWS AS "
            f"SELECT {_quoted(columns)} FROM {qn(table)} WITH NO DATA"
        )
        cursor.execute(f"DELETE FROM {qn(stage)}")
    transaction.on_commit(lambda: clean.add(stage))


@dataclass
class _Plan:
    """Where one model's batch goes: its table, its stage and the columns of both."""

    model: type
    key: tuple[str, ...]
    compare: tuple[str, ...]
    given: list[str]  # the fields the rows carry: key, then compared
    defaults: dict  # the model's defaults for the fields the rows leave out, as Django fills them in

    @classmethod
    def of(cls, model, key, compare) -> "_Plan":
        given = [*key, *compare]
        defaults = {f.name: f.get_default() for f in model._meta.concrete_fields if _defaulted(f, given)}
        return cls(model, tuple(key), tuple(compare), given, defaults)

    @property
    def fields(self) -> list:
        return [self.model._meta.get_field(n) for n in [*self.given, *self.defaults]]

    @property
    def columns(self) -> list[str]:
        return [f.column for f in self.fields]

    @property
    def table(self) -> str:
        return self.model._meta.db_table

    @property
    def stage(self) -> str:
        return f"ballast_stage_{self.table}"


class PostgresCopyWriter(Writer):
    kind = "copy"

    def inserted(self, table: str, rows: int) -> None:
        _analyze_if_grown(table, rows)

    def append(self, model, rows: list[dict]) -> None:
        """Binary COPY straight into the table."""
        if not rows:
            return
        fields = [f for f in model._meta.concrete_fields if not f.primary_key]
        _clean_stages_of_this_connection()  # JSON columns dumped as the writer dumps them
        values = itemgetter(*[f.attname for f in fields])
        with connection.cursor() as cursor:
            with cursor.copy(f"COPY {connection.ops.quote_name(model._meta.db_table)} ({_quoted(f.column for f in fields)}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types([_copy_type(f) for f in fields])
                for row in rows:
                    copy.write_row(values(row))
        _analyze_if_grown(model._meta.db_table, len(rows))

    def write_unique(self, model, *, tenant_id, rows, key, compare, now, new_if_null):
        plan, qn = _Plan.of(model, key, compare), connection.ops.quote_name
        with connection.cursor() as cursor:
            _stage_table(cursor, plan.stage, plan.table, plan.columns)
            with cursor.copy(f"COPY {qn(plan.stage)} ({_quoted(plan.columns)}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types([_copy_type(f) for f in plan.fields])
                given = plan.given
                values = itemgetter(*given) if len(given) > 1 else lambda row: (row[given[0]],)
                filled = tuple(plan.defaults.values())
                for row in rows.values():
                    copy.write_row(values(row) + filled)
            return self._merge(cursor, plan, tenant_id, now, new_if_null, staged=len(rows))

    def write_query(self, model, *, tenant_id, source, key, compare, now):
        """The rows go from table to table inside PostgreSQL (INSERT … SELECT into the stage):
        no row passes through Python."""
        plan, qn = _Plan.of(model, key, compare), connection.ops.quote_name
        if plan.defaults:  # values Python would have to adapt: take the rows through Python
            return super().write_query(model, tenant_id=tenant_id, source=source, key=key, compare=compare, now=now)
        try:
            sql, params = source.values(*plan.given).query.sql_with_params()
        except EmptyResultSet:  # a query Django knows yields nothing (e.g. pk__in=[])
            return Outcome()
        with connection.cursor() as cursor:
            _stage_table(cursor, plan.stage, plan.table, plan.columns)
            cursor.execute(
                f"INSERT INTO {qn(plan.stage)} ({_quoted(plan.columns)}) "
                f"SELECT {', '.join(f'q.{qn(n)}' for n in plan.given)} FROM ({sql}) q",
                params,
            )
            if not cursor.rowcount:
                return Outcome()
            return self._merge(cursor, plan, tenant_id, now, None, staged=cursor.rowcount)

    def _merge(self, cursor, plan: _Plan, tenant_id, now, new_if_null, staged: int) -> Outcome:
        """From the stage into the table: the new inserted, the changed updated, both counted by
        RETURNING; the rest stamped."""
        meta, qn, columns = plan.model._meta, connection.ops.quote_name, plan.columns
        key_columns = [meta.get_field(n).column for n in plan.key]
        compared = [meta.get_field(n).column for n in plan.compare]
        tenant_column = meta.get_field("tenant").column
        if compared:
            changed = f"({', '.join(f't.{qn(c)}' for c in compared)}) IS DISTINCT FROM ({', '.join(f'EXCLUDED.{qn(c)}' for c in compared)})"
        else:  # nothing to compare (a source that gives only keys): a row that exists is unchanged
            changed = "FALSE"
        updates = [f"{qn(c)} = EXCLUDED.{qn(c)}" for c in compared] + ["last_seen = EXCLUDED.last_seen"]
        created = "t.xmax = 0"  # inserted, not updated
        if new_if_null:
            placeholder = f"t.{qn(meta.get_field(new_if_null).column)} IS NULL"
            changed += f" OR {placeholder}"
            # A placeholder another step made is first seen by the directory now, and counted
            # created in the same statement that writes it (a count beforehand would race that step).
            updates.append(f"first_seen = CASE WHEN {placeholder} THEN EXCLUDED.first_seen ELSE t.first_seen END")
            created += " OR t.first_seen = %s"
        upsert = (
            f"INSERT INTO {qn(plan.table)} AS t ({qn(tenant_column)}, {_quoted(columns)}, first_seen, last_seen) "
            f"SELECT %s, {_quoted(columns)}, %s, %s FROM {qn(plan.stage)} "
            f"ON CONFLICT ({qn(tenant_column)}, {_quoted(key_columns)}) DO UPDATE SET "
        )
        cursor.execute(
            f"{upsert}{', '.join(updates)} WHERE {changed} RETURNING ({created})",
            [tenant_id, now, now] + ([now] if new_if_null else []),
        )
        written = [inserted for (inserted,) in cursor.fetchall()]
        if len(written) < staged:  # some were unchanged (none are, in a first sync's batches)
            # Their stamp goes through the unique index too (an UPDATE … FROM the stage may
            # hash-join a whole table scan: its cost would grow with the table).
            cursor.execute(f"{upsert}last_seen = EXCLUDED.last_seen WHERE t.last_seen IS DISTINCT FROM EXCLUDED.last_seen", [tenant_id, now, now])
        created_count = sum(written)
        _analyze_if_grown(plan.table, created_count)
        return Outcome(created=created_count, updated=len(written) - created_count, unchanged=staged - len(written))
