"""Database failures a step outlives: which are worth another try, and a fresh connection after one.

Decided on the driver's types and SQLSTATE codes, never on message text.
"""

import sqlite3
import time
from collections.abc import Callable

from django.db import DatabaseError, InterfaceError, connection

try:
    import psycopg
except ImportError:  # SQLite-only installs
    psycopg = None

# serialization_failure, deadlock_detected: the transaction may simply be run again.
RETRY_SQLSTATES = {"40001", "40P01"}
# admin_shutdown (pg_terminate_backend), crash_shutdown, cannot_connect_now; class 08: connection exceptions.
LOST_SQLSTATES = {"57P01", "57P02", "57P03"}
SQLITE_BUSY = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}
ATTEMPTS, BACKOFF_S = 4, 0.25


class DatabaseLost(Exception):
    """The database stayed unreachable (or kept refusing) through every retry."""


def connection_lost(exc: BaseException) -> bool:
    if isinstance(exc, InterfaceError):  # Django: the connection was already closed
        return True
    cause = exc.__cause__
    if psycopg is not None and isinstance(cause, psycopg.OperationalError):
        state = cause.sqlstate
        return state is None or state.startswith("08") or state in LOST_SQLSTATES
    return False


def retryable(exc: BaseException) -> bool:
    """A failure that another try, on a fresh connection, may not meet."""
    if not isinstance(exc, (DatabaseError, InterfaceError)):  # Django's InterfaceError is no DatabaseError
        return False
    cause = exc.__cause__
    if getattr(cause, "sqlstate", None) in RETRY_SQLSTATES:
        return True
    if isinstance(cause, sqlite3.OperationalError) and getattr(cause, "sqlite_errorcode", None) in SQLITE_BUSY:
        return True
    return connection_lost(exc)


def fresh_connection() -> None:
    """Drop this thread's connection if it no longer works: the next query opens a new one."""
    if connection.in_atomic_block:
        return
    if connection.connection is not None and not connection.is_usable():
        connection.close()


def with_retries(work: Callable, *, what: str, log, attempts: int = ATTEMPTS, sleep=time.sleep):
    """Run work(); on a retryable database error, on a fresh connection again, with backoff.
    Raises DatabaseLost when the tries run out on a retryable error; others pass through."""
    for attempt in range(1, attempts + 1):
        try:
            return work()
        except (DatabaseError, InterfaceError) as exc:
            if not retryable(exc):
                raise
            if attempt == attempts:
                raise DatabaseLost(f"{what}: database error after {attempts} tries: {exc.__class__.__name__}: {exc}") from exc
            log.warning("%s: %s: %s; trying again (%d of %d)", what, exc.__class__.__name__, str(exc).strip()[:200], attempt + 1, attempts)
            fresh_connection()
            sleep(BACKOFF_S * 2 ** (attempt - 1))
    raise AssertionError("unreachable")
