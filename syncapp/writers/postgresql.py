"""The PostgreSQL writer, at COPY speed: COPY the batch (binary) into a temporary staging table,
then one INSERT … SELECT … ON CONFLICT DO UPDATE … WHERE the compared columns are distinct,
RETURNING whether each row was inserted (xmax = 0) or updated; the rest of the batch was
unchanged and gets its last_seen stamped in one UPDATE … FROM the staging table. The conflict
check and the stamp go through the unique index on (tenant, key): no lookup whose plan depends
on the table's statistics.
"""

from django.db import connection

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
# a whole tenant through its tenant_id index for a lookup by key. Analyse as a table grows.
ANALYZE_EVERY_ROWS = 20_000
_created_since_analyze: dict[str, int] = {}


def _analyze_if_grown(table: str, created: int) -> None:
    grown = _created_since_analyze.get(table, 0) + created
    if grown >= ANALYZE_EVERY_ROWS:
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {connection.ops.quote_name(table)}")
        grown = 0
    _created_since_analyze[table] = grown


class PostgresCopyWriter(Writer):
    kind = "copy"

    def write_unique(self, model, *, tenant_id, rows, key, compare, now, new_if_null):
        meta, qn = model._meta, connection.ops.quote_name
        table, stage = meta.db_table, f"ballast_stage_{meta.db_table}"
        given = [*key, *compare]
        # The model's defaults for the fields the rows leave out, as Django would fill them in.
        defaults = {f.name: f.get_default() for f in meta.concrete_fields if _defaulted(f, given)}
        names = [*given, *defaults]
        fields = [meta.get_field(n) for n in names]
        columns, key_columns = [f.column for f in fields], [meta.get_field(n).column for n in key]
        compared = [meta.get_field(n).column for n in compare]
        tenant_column = meta.get_field("tenant").column
        on_key = " AND ".join(f"t.{qn(c)} = s.{qn(c)}" for c in key_columns)
        changed = f"({', '.join(f't.{qn(c)}' for c in compared)}) IS DISTINCT FROM ({', '.join(f'EXCLUDED.{qn(c)}' for c in compared)})"
        if new_if_null:
            changed += f" OR t.{qn(meta.get_field(new_if_null).column)} IS NULL"
        with connection.cursor() as cursor:
            cursor.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {qn(stage)} ON COMMIT DELETE ROWS AS "
                f"SELECT {_quoted(columns)} FROM {qn(table)} WITH NO DATA"
            )
            cursor.execute(f"TRUNCATE {qn(stage)}")  # a second batch in one transaction starts empty
            with cursor.copy(f"COPY {qn(stage)} ({_quoted(columns)}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types([_copy_type(f) for f in fields])
                for row in rows.values():
                    copy.write_row([row[n] for n in given] + list(defaults.values()))
            updates = [f"{qn(c)} = EXCLUDED.{qn(c)}" for c in compared] + ["last_seen = EXCLUDED.last_seen"]
            created = "t.xmax = 0"  # inserted, not updated
            if new_if_null:
                # A placeholder another step made is first seen by the directory now, and counted
                # created in the same statement that writes it (a count beforehand would race that step).
                updates.append(f"first_seen = CASE WHEN t.{qn(meta.get_field(new_if_null).column)} IS NULL THEN EXCLUDED.first_seen ELSE t.first_seen END")
                created += " OR t.first_seen = %s"
            cursor.execute(
                f"INSERT INTO {qn(table)} AS t ({qn(tenant_column)}, {_quoted(columns)}, first_seen, last_seen) "
                f"SELECT %s, {_quoted(columns)}, %s, %s FROM {qn(stage)} "
                f"ON CONFLICT ({qn(tenant_column)}, {_quoted(key_columns)}) DO UPDATE SET {', '.join(updates)} "
                f"WHERE {changed} RETURNING ({created})",
                [tenant_id, now, now] + ([now] if new_if_null else []),
            )
            written = [inserted for (inserted,) in cursor.fetchall()]
            cursor.execute(
                f"UPDATE {qn(table)} t SET last_seen = %s FROM {qn(stage)} s "
                f"WHERE t.{qn(tenant_column)} = %s AND {on_key} AND t.last_seen IS DISTINCT FROM %s",
                [now, tenant_id, now],
            )
        created_count = sum(written)
        _analyze_if_grown(table, created_count)
        return Outcome(created=created_count, updated=len(written) - created_count, unchanged=len(rows) - len(written))
