"""Writers of a batch of rows, one per database family, keeping one contract (base.Writer)."""

from django.db import connection

from .base import Outcome, Writer
from .orm import OrmWriter
from .postgresql import PostgresCopyWriter

__all__ = ["Outcome", "Writer", "append_rows", "inserted", "upsert_query", "upsert_rows", "writer"]


def writer() -> Writer:
    """PostgreSQL gets the COPY writer; any other database the portable one."""
    return PostgresCopyWriter() if connection.vendor == "postgresql" else OrmWriter()


def upsert_rows(model, **kwargs) -> Outcome:
    return writer().write(model, **kwargs)


def upsert_query(model, **kwargs) -> Outcome:
    return writer().write_query(model, **kwargs)


def append_rows(model, rows: list[dict]) -> None:
    writer().append(model, rows)


def inserted(model, rows: int) -> None:
    """Rows a step inserted by other means than a writer (placeholder users): the table's
    statistics follow its growth as they do for the writers' own inserts."""
    writer().inserted(model._meta.db_table, rows)
