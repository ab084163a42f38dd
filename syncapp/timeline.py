"""The grant timeline (GrantEvent): one row per change of a token — granted, scopes widened or
narrowed, revoked, granted again — written by a database trigger on the token table (migration
0011), so every path that writes tokens (the writers, the changes and delta steps, a revocation
of the unseen) records its changes in its own statement and transaction, and a write that
changes nothing records nothing: a resumed step cannot write a change twice.

The trigger cannot see which run made the change; a step says so for its transactions with
seen_by(): on PostgreSQL a transaction-local setting, on SQLite two functions of the
connection that read this thread's value (Django gives each thread its own connection)."""

import threading
from contextlib import contextmanager

from django.db import connection
from django.db.backends.signals import connection_created

from .models import GrantEvent, SyncRun, SyncStep
from .step_registry import STEPS

SETTING = "ballast.seen_by"  # PostgreSQL: "<run id>:<via>" for the current transaction
_seen = threading.local()


@contextmanager
def seen_by(run_id: int | None, via: str):
    """Changes of tokens in this block were seen by this run, through this way (GrantEvent.Via).
    Use it inside a transaction: on PostgreSQL the setting lasts to the transaction's end."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config(%s, %s, true)", [SETTING, f"{run_id or ''}:{via}"])
        yield
        return
    before = getattr(_seen, "value", None)
    _seen.value = (run_id, via)
    try:
        yield
    finally:
        _seen.value = before


def seen_via(step: SyncStep) -> str:
    """How a step sees the changes it writes: an import's, the changes feed's, or a full sync's."""
    if step.run.trigger == SyncRun.Trigger.IMPORT:
        return GrantEvent.Via.IMPORT
    return GrantEvent.Via(STEPS[step.name].timeline_via)


def _seen_run():
    value = getattr(_seen, "value", None)
    return value[0] if value else None


def _seen_via():
    value = getattr(_seen, "value", None)
    return value[1] if value else GrantEvent.Via.OTHER


def _register_functions(sender, connection, **kwargs):
    """Every SQLite connection knows the functions the trigger calls (migration 0011)."""
    if connection.vendor == "sqlite":
        connection.connection.create_function("ballast_seen_run", 0, _seen_run)
        connection.connection.create_function("ballast_seen_via", 0, _seen_via)


connection_created.connect(_register_functions, dispatch_uid="ballast-timeline-functions")
