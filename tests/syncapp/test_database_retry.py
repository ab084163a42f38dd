"""Which database failures a step retries (decided on driver types and SQLSTATEs), and how."""

import logging
import sqlite3

import psycopg
import pytest
from django.db import IntegrityError, InterfaceError, OperationalError

from syncapp.database_retry import DatabaseLost, retryable, with_retries

log = logging.getLogger("test")


def wrapped(django_error, cause):
    """As Django raises them: its own class, the driver's error as the cause."""
    error = django_error(str(cause))
    error.__cause__ = cause
    return error


def sqlite_error(code: int):
    error = sqlite3.OperationalError("whatever the text says")
    error.sqlite_errorcode = code
    return error


@pytest.mark.parametrize("error, again", [
    (wrapped(OperationalError, psycopg.errors.SerializationFailure()), True),
    (wrapped(OperationalError, psycopg.errors.DeadlockDetected()), True),
    (wrapped(OperationalError, psycopg.errors.AdminShutdown()), True),  # pg_terminate_backend
    (wrapped(OperationalError, psycopg.OperationalError("server closed the connection unexpectedly")), True),
    (wrapped(InterfaceError, psycopg.InterfaceError("connection already closed")), True),
    (wrapped(OperationalError, sqlite_error(sqlite3.SQLITE_BUSY)), True),  # "database is locked"
    (wrapped(OperationalError, sqlite_error(sqlite3.SQLITE_FULL)), False),
    (wrapped(IntegrityError, psycopg.errors.UniqueViolation()), False),
    (wrapped(OperationalError, psycopg.errors.DiskFull()), False),
    (ValueError("not a database error"), False),
])
def test_what_is_worth_another_try(error, again):
    assert retryable(error) is again


def test_retries_with_backoff_then_succeeds():
    failures, slept = [wrapped(OperationalError, psycopg.errors.DeadlockDetected())] * 2, []

    def work():
        if failures:
            raise failures.pop()
        return "written"

    assert with_retries(work, what="a batch", log=log, sleep=slept.append) == "written"
    assert slept == [0.25, 0.5]


def test_a_failure_that_stays_ends_as_database_lost_and_others_pass_at_once():
    slept = []

    def lost():
        raise wrapped(OperationalError, psycopg.errors.AdminShutdown())

    with pytest.raises(DatabaseLost, match="a batch: database error after 4 tries"):
        with_retries(lost, what="a batch", log=log, sleep=slept.append)
    assert slept == [0.25, 0.5, 1.0]

    def refused():
        raise wrapped(IntegrityError, psycopg.errors.UniqueViolation())

    with pytest.raises(IntegrityError):
        with_retries(refused, what="a batch", log=log, sleep=slept.append)
    assert slept == [0.25, 0.5, 1.0]  # no try more
