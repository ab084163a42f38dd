"""Write one batch of rows so the counters tell the truth.

Read the batch's existing rows in one query by key, compare, upsert the new and
changed rows in one INSERT … ON CONFLICT (bulk_create with update_conflicts:
never bulk_update, which builds a CASE per row), and stamp the unchanged rows'
last_seen with one UPDATE. A second run over unchanged data writes only stamps.
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Model


@dataclass
class Outcome:
    created: int = 0
    updated: int = 0
    unchanged: int = 0


def upsert_rows(
    model: type[Model],
    *,
    tenant_id: int,
    rows: list[dict],
    key: tuple[str, ...],
    compare: tuple[str, ...],
    now: datetime,
    is_new: Callable[[dict], bool] = lambda existing: False,
) -> Outcome:
    """Upsert rows (dicts of key + compare fields) for one tenant; is_new may call an existing row new."""
    unique = {tuple(row[f] for f in key): row for row in rows}  # the last of duplicates wins
    lookups = {f"{f}__in": {k[i] for k in unique} for i, f in enumerate(key)}
    existing = {
        tuple(e[f] for f in key): e
        for e in model.objects.filter(tenant_id=tenant_id, **lookups).values("pk", "last_seen", *key, *compare)
    }
    outcome, write, stamp = Outcome(), [], []
    for row_key, row in unique.items():
        old = existing.get(row_key)
        if old is None or is_new(old):
            outcome.created += 1
            write.append(row)
        elif any(old[f] != row[f] for f in compare):
            outcome.updated += 1
            write.append(row)
        else:
            outcome.unchanged += 1
            stamp.append(old["pk"])
    if write:
        model.objects.bulk_create(
            [model(tenant_id=tenant_id, first_seen=now, last_seen=now, **row) for row in write],
            update_conflicts=True,
            unique_fields=["tenant", *key],
            update_fields=[*compare, "last_seen"],
        )
    if stamp:
        model.objects.filter(pk__in=stamp).update(last_seen=now)
    return outcome
