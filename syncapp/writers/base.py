"""Write one batch of rows so the counters tell the truth: the contract every writer keeps.

A writer upserts a tenant's rows by their unique key: a row whose key is new is created (and
stamped first_seen = last_seen = now); one whose compared fields differ is updated; one that
is the same is only stamped last_seen = now. Each counts exactly once. A second run over
unchanged data writes nothing but stamps.
"""

from dataclasses import dataclass, fields
from datetime import datetime

from django.db.models import Model, QuerySet


@dataclass
class Outcome:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    deactivated: int = 0  # a writer never deactivates; a step's own writes may (the changes step's revokes)

    def __add__(self, other: "Outcome") -> "Outcome":
        return Outcome(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))


class Writer:
    kind = ""  # "orm" or "copy": how batches are sized for it (syncapp.steps.context.BATCH_SCALE)

    def write(
        self,
        model: type[Model],
        *,
        tenant_id: int,
        rows: list[dict],
        key: tuple[str, ...],
        compare: tuple[str, ...],
        now: datetime,
        new_if_null: str | None = None,
    ) -> Outcome:
        """Upsert rows (dicts of key + compare fields) for one tenant, inside the caller's
        transaction. Duplicates of a key in one batch: the last wins, counted once. A row that
        exists with `new_if_null` NULL (a placeholder another step made) counts as created."""
        unique = {tuple(row[f] for f in key): row for row in rows}  # the last of duplicates wins
        if not unique:
            return Outcome()
        return self.write_unique(model, tenant_id=tenant_id, rows=unique, key=key, compare=compare, now=now, new_if_null=new_if_null)

    def write_query(self, model: type[Model], *, tenant_id: int, source: QuerySet, key: tuple[str, ...], compare: tuple[str, ...],
                    now: datetime) -> Outcome:
        """Upsert, as write() does, the rows a query of another table yields: source.values(*key,
        *compare) are the rows, each key at most once. Here they are read into Python and written;
        a writer may keep them inside the database."""
        return self.write(model, tenant_id=tenant_id, rows=list(source.values(*key, *compare)), key=key, compare=compare, now=now)

    def append(self, model: type[Model], rows: list[dict]) -> None:
        """Insert rows (every column but the primary key, by attname) as they are: no key, no
        comparison, no counts. For tables of the steps' own bookkeeping."""
        model.objects.bulk_create([model(**row) for row in rows])

    def inserted(self, table: str, rows: int) -> None:
        """Told of rows inserted into table outside write(); a writer that keeps statistics up to date counts them."""

    def write_unique(self, model, *, tenant_id, rows: dict[tuple, dict], key, compare, now, new_if_null) -> Outcome:
        """What write() does, for at least one row, each key once: rows maps key → row."""
        raise NotImplementedError
