"""Directory exports read as a stream: GAM's CSV (`gam print users`, `gam all users print
tokens`) and JSON lines, plain or gzip. A file is read FILE_CHUNK_BYTES at a time (1 MB by
default; a smaller file in one read), so memory does not grow with its size. Each record comes
with its line number and the byte offset after it: a checkpoint to resume from.

Records leave in the shape the rest of Ballast reads (Google's users.list and tokens.list items),
so validation, counters and writers are those of a sync. A row that cannot be read becomes a
problem naming its line; a file that is not an export of that kind at all raises ExportFileError.
"""

import codecs
import csv
import gzip
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

FORMATS = ("csv", "jsonl")
# The GAM columns Ballast reads (others are ignored). GAM names a column by the Directory API's
# field, subfields joined by ".": each names the record field it fills.
GAM_COLUMNS = {
    "users": ("primaryEmail", "id", "name.fullName", "isAdmin", "isDelegatedAdmin", "suspended", "archived",
              "orgUnitPath", "creationTime", "lastLoginTime"),
    "tokens": ("user", "clientId", "displayText", "anonymous", "nativeApp", "userKey", "scopes"),
}
# Without these a file cannot be read at all: each entry is columns of which one will do.
REQUIRED_COLUMNS = {"users": (("id",), ("primaryEmail",)), "tokens": (("clientId",), ("userKey", "user"))}
# What writes each export with every column Ballast reads (`gam print users` alone writes primaryEmail
# only; `gam all users print tokens` leaves suspended users out).
GAM_COMMANDS = {
    "users": "gam print users fields id,primaryemail,name,isadmin,isdelegatedadmin,suspended,archived,orgunitpath,creationtime,lastlogintime",
    "tokens": "gam all users_ns_susp print tokens",
}
# GAM's CSV dialect (gam/util/csv_pf.py, _setDialect): quotes doubled, and a backslash escaped by another.
GAM_DIALECT = {"escapechar": "\\", "doublequote": True}
BOOLEANS = {"true": True, "false": False}
NEVER = "never"  # GAM's word for a login that never happened


class ExportFileError(ValueError):
    """The file cannot be read as the export it is given as; the message says why in one line."""


@dataclass(frozen=True)
class Position:
    """Where a read stands: the byte offset (of the decompressed text) where the next line starts,
    and that line's number. Position(0, 1) is the start."""

    offset: int = 0
    line: int = 1


@dataclass(frozen=True)
class Row:
    line: int  # where the record starts
    after: Position  # where the next one starts: this row's checkpoint
    record: dict | None  # in the Directory API's shape
    problem: str | None = None  # why there is no record (the line is `line`)


def format_of(path: Path | str, given: str | None = None) -> str:
    """csv or jsonl, as given, else from the name (.csv, .jsonl or .ndjson, optionally .gz)."""
    if given:
        if given not in FORMATS:
            raise ExportFileError(f"unknown format {given!r}; choose from {', '.join(FORMATS)}")
        return given
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    kind = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}.get(suffixes[-1] if suffixes else "")
    if kind is None:
        raise ExportFileError(f"{Path(path).name}: cannot tell the format from the name; name it .csv, .jsonl or .ndjson (optionally .gz), or say --format")
    return kind


def _decoded(path: Path, line: bytes, number: int) -> str:
    try:
        return line.decode("utf-8")  # a UTF-8 character never contains a newline byte: lines decode alone
    except UnicodeDecodeError:
        raise ExportFileError(f"{path.name}: line {number} is not UTF-8 text: not an export") from None


def _raw(path: Path):
    """The file's bytes, decompressed as they are read when it is gzip (.gz)."""
    return (gzip.open if path.suffix.lower() == ".gz" else open)(path, "rb")


def _lines(path: Path, start: Position, chunk_bytes: int) -> Iterator[tuple[int, int, str]]:
    """(line number, offset after the line, text with its newline) from `start`, read
    chunk_bytes at a time: only the chunk and an unfinished line are ever held."""
    with _raw(path) as raw:
        if start.offset:
            raw.seek(start.offset)  # gzip seeks by decompressing up to there: still a stream
        offset, number, pending = start.offset, start.line, b""
        while chunk := raw.read(chunk_bytes):
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for line in complete:
                size = len(line) + 1
                if offset == 0:
                    line = line.removeprefix(codecs.BOM_UTF8)  # as Excel saves CSV; its bytes still count
                offset += size
                yield number, offset, _decoded(path, line + b"\n", number)
                number += 1
        if pending:
            size = len(pending)
            if offset == 0:
                pending = pending.removeprefix(codecs.BOM_UTF8)
            yield number, offset + size, _decoded(path, pending, number)


def _opened(path: Path | str, kind: str, chunk_bytes: int | None) -> tuple[Path, int]:
    """The file and the chunk size to read it by; ExportFileError when there is no such file."""
    path = Path(path)
    chunk_bytes = chunk_bytes or getattr(settings, "BALLAST_FILE_CHUNK_BYTES", 2**20)
    if kind not in GAM_COLUMNS:
        raise ValueError(kind)
    if not path.is_file():
        raise ExportFileError(f"{path}: no such file")
    size = path.stat().st_size
    return path, max(chunk_bytes, 1) if size > chunk_bytes else max(size, 1)  # a small file: one read


@contextmanager
def _read_or_refuse(path: Path):
    """A file that cannot be read at all (a bad gzip, an I/O error) is ExportFileError, in one line."""
    try:
        yield
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise ExportFileError(f"{path.name}: cannot be read ({exc.__class__.__name__}: {exc})") from None


def read_export(path: Path | str, kind: str, *, format: str | None = None, start: Position = Position(),
                chunk_bytes: int | None = None) -> Iterator[Row]:
    """The records of a users or tokens export, from `start`. Raises ExportFileError when the
    file is not that export (a missing file, binary data, a CSV without the columns the export
    must have, a first line that is not a JSON object)."""
    path, chunk_bytes = _opened(path, kind, chunk_bytes)
    with _read_or_refuse(path):
        if format_of(path, format) == "csv":
            yield from _csv_rows(path, kind, start, chunk_bytes)
        else:
            yield from _jsonl_rows(path, kind, start, chunk_bytes)


def count_records(path: Path | str, kind: str, *, format: str | None = None, chunk_bytes: int | None = None) -> int:
    """How many records an export holds, by its lines, in one pass over its bytes (a CSV's header
    is not one): what an import's progress is told against."""
    path, chunk_bytes = _opened(path, kind, chunk_bytes)
    lines, last = 0, b"\n"
    with _read_or_refuse(path), _raw(path) as raw:
        while chunk := raw.read(chunk_bytes):
            lines, last = lines + chunk.count(b"\n"), chunk[-1:]
    lines += last != b"\n"  # a last line without its newline
    return max(lines - (format_of(path, format) == "csv"), 0)


def given_fields(path: Path | str, kind: str, *, format: str | None = None, complete: bool = False) -> frozenset[str] | None:
    """The record fields the export gives (GAM_COLUMNS' names): a CSV's are the columns of its
    header, and a column it lacks is unknown, not empty; None for JSON lines, whose records are
    the API's whole objects. Raises ExportFileError naming what is missing: a column the export
    cannot be read without, or, for a whole export (`complete`), any column Ballast reads (a
    whole export says what is gone, and it cannot say it of a field it lacks)."""
    path, chunk_bytes = _opened(path, kind, None)
    with _read_or_refuse(path):
        if format_of(path, format) != "csv":
            rows = _jsonl_rows(path, kind, Position(), chunk_bytes)
            next(rows, None)  # a first line that is not a JSON object is refused
            rows.close()
            return None
        header, _ = _csv_header(path, kind, chunk_bytes)
    given = frozenset(header) & frozenset(GAM_COLUMNS[kind])
    alternatives = {column for choice in REQUIRED_COLUMNS[kind] if len(choice) > 1 for column in choice}  # one of them is there
    absent = [column for column in GAM_COLUMNS[kind] if column not in given and column not in alternatives]
    if complete and absent:
        raise ExportFileError(
            f"{path.name}: a whole export (--complete) needs every column Ballast reads, and it lacks {', '.join(absent)}: "
            f"write it with `{GAM_COMMANDS[kind]}`, or import it without --complete (then a column it lacks keeps what is stored)"
        )
    return given


def _jsonl_rows(path: Path, kind: str, start: Position, chunk_bytes: int) -> Iterator[Row]:
    first = start.line == 1
    for number, after, text in _lines(path, start, chunk_bytes):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except ValueError as exc:
            if first:
                raise ExportFileError(f"{path.name}: line {number} is not JSON: not a JSON lines export") from None
            yield Row(number, Position(after, number + 1), None, f"not JSON ({exc.__class__.__name__})")
            continue
        if not isinstance(record, dict):
            if first:
                raise ExportFileError(f"{path.name}: line {number} is not a JSON object: not a JSON lines export")
            yield Row(number, Position(after, number + 1), None, "not a JSON object")
            continue
        first = False
        if kind == "tokens" and "userKey" not in record and "user" in record:
            record = {**record, "userKey": record["user"]}
        yield Row(number, Position(after, number + 1), record)


def _csv_header(path: Path, kind: str, chunk_bytes: int) -> tuple[list[str], Position]:
    """The CSV's column names and where its first row starts; ExportFileError, in one line naming
    the columns and the gam command that writes them, when the export cannot be read without them."""
    lines = _lines(path, Position(), chunk_bytes)
    try:
        _, end, text = next(lines)
    except StopIteration:
        raise ExportFileError(f"{path.name}: empty: not a GAM {kind} export") from None
    finally:
        lines.close()
    try:
        header = next(csv.reader([text], **GAM_DIALECT))
    except (csv.Error, StopIteration):
        header = []
    missing = [" or ".join(choice) for choice in REQUIRED_COLUMNS[kind] if not set(choice) & set(header)]
    if missing:
        shown = ", ".join(header[:8]) + (", …" if len(header) > 8 else "")
        raise ExportFileError(
            f"{path.name}: no {' and no '.join(missing)} column, so not a GAM {kind} export Ballast can read "
            f"(its columns: {shown or 'none'}); write it with `{GAM_COMMANDS[kind]}`"
        )
    return header, Position(end, 2)


def _csv_rows(path: Path, kind: str, start: Position, chunk_bytes: int) -> Iterator[Row]:
    header, first_row = _csv_header(path, kind, chunk_bytes)
    given = set(header) & set(GAM_COLUMNS[kind])
    if start.line == 1:
        start = first_row
    where = {"after": start}  # the position after the last line the CSV reader took

    def text_lines():
        for number, after, text in _lines(path, start, chunk_bytes):
            where["after"] = Position(after, number + 1)
            yield text

    lines = text_lines()
    reader = csv.reader(lines, **GAM_DIALECT)
    while True:
        row_line = where["after"].line
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield Row(row_line, where["after"], None, f"not CSV ({exc})")
            reader = csv.reader(lines, **GAM_DIALECT)  # go on with the next line
            continue
        if not any(v.strip() for v in values):
            continue
        row = {column: value for column, value in zip(header, values) if column in given}
        try:
            record = gam_user(row) if kind == "users" else gam_token(row)
        except ValueError as exc:
            yield Row(row_line, where["after"], None, str(exc))
            continue
        yield Row(row_line, where["after"], record)


def _boolean(row: dict, column: str) -> bool | None:
    value = (row.get(column) or "").strip()
    if not value:
        return None
    try:
        return BOOLEANS[value.lower()]
    except KeyError:
        raise ValueError(f"{column} is {value!r}, not True or False") from None


def _text(row: dict, column: str) -> str | None:
    value = row.get(column)
    return value if value not in (None, "") else None


def _flags(row: dict, record: dict, columns: tuple[str, ...]) -> dict:
    for column in columns:
        flag = _boolean(row, column)
        if flag is not None:
            record[column] = flag
    return record


def gam_user(row: dict) -> dict:
    """A `gam print users` row (the columns the file has) → a users.list item with those fields
    only: a column the file lacks is left out, unknown. GAM's "Never" login: none."""
    record = {"id": _text(row, "id"), "primaryEmail": _text(row, "primaryEmail")}
    if "name.fullName" in row:
        record["name"] = {"fullName": row["name.fullName"]}
    for column in ("orgUnitPath", "creationTime", "lastLoginTime"):
        if column in row:
            record[column] = _text(row, column)
    if (record.get("lastLoginTime") or "").strip().lower() == NEVER:
        record["lastLoginTime"] = None
    return _flags(row, record, ("isAdmin", "isDelegatedAdmin", "suspended", "archived"))


def gam_token(row: dict) -> dict:
    """A `gam all users print tokens` row (the columns the file has) → a tokens.list item with its
    user (userKey, else user) and the fields the file has. A row with a user and nothing else is
    GAM's line for a user without tokens (its csv_output_users_audit setting): "tokenless"."""
    record = {"clientId": _text(row, "clientId"), "userKey": _text(row, "userKey") or _text(row, "user"), "user": _text(row, "user")}
    if record["clientId"] is None and record["userKey"] and not any(_text(row, c) for c in ("displayText", "scopes", "anonymous", "nativeApp")):
        return {**record, "tokenless": True}
    if "displayText" in row:
        record["displayText"] = row["displayText"]
    if "scopes" in row:
        record["scopes"] = row["scopes"].split()  # GAM joins them with its field delimiter, a space
    return _flags(row, record, ("anonymous", "nativeApp"))
