"""The portable writer (SQLite, or any database Django speaks): read the batch's existing rows
by their exact keys, compare in Python, upsert the new and changed in one INSERT … ON CONFLICT
(bulk_create with update_conflicts — never bulk_update, which builds a CASE per row) and stamp
the unchanged with one UPDATE."""

from functools import reduce
from operator import or_

from django.db.models import Q

from .base import Outcome, Writer


def _exact_keys(key: tuple[str, ...], keys) -> Q:
    """The rows with exactly these keys (a composite key is not a product of IN lists)."""
    if len(key) == 1:
        return Q(**{f"{key[0]}__in": [k[0] for k in keys]})
    return reduce(or_, (Q(**dict(zip(key, k))) for k in keys), Q(pk__in=[]))


class OrmWriter(Writer):
    kind = "orm"

    def write_unique(self, model, *, tenant_id, rows, key, compare, now, new_if_null):
        fields = {"pk", "last_seen", *key, *compare} | ({new_if_null} if new_if_null else set())
        existing = {
            tuple(e[f] for f in key): e
            for e in model.objects.filter(_exact_keys(key, rows), tenant_id=tenant_id).values(*fields)
        }
        outcome, write, stamp = Outcome(), [], []
        for row_key, row in rows.items():
            old = existing.get(row_key)
            if old is None or (new_if_null and old[new_if_null] is None):
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
