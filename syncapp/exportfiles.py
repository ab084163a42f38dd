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
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

FORMATS = ("csv", "jsonl")
# The GAM columns Ballast reads (others are ignored), and the one a file must have to be that export.
GAM_COLUMNS = {
    "users": ("primaryEmail", "id", "name.fullName", "isAdmin", "suspended", "orgUnitPath", "creationTime", "lastLoginTime"),
    "tokens": ("user", "clientId", "displayText", "anonymous", "nativeApp", "scopes", "userKey"),
}
REQUIRED_COLUMN = {"users": "primaryEmail", "tokens": "clientId"}
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


def _lines(path: Path, start: Position, chunk_bytes: int) -> Iterator[tuple[int, int, str]]:
    """(line number, offset after the line, text with its newline) from `start`, read
    chunk_bytes at a time: only the chunk and an unfinished line are ever held."""
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    with opener(path, "rb") as raw:
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


def read_export(path: Path | str, kind: str, *, format: str | None = None, start: Position = Position(),
                chunk_bytes: int | None = None) -> Iterator[Row]:
    """The records of a users or tokens export, from `start`. Raises ExportFileError when the
    file is not that export (a missing file, binary data, a CSV without the export's columns, a
    first line that is not a JSON object)."""
    path = Path(path)
    chunk_bytes = chunk_bytes or getattr(settings, "BALLAST_FILE_CHUNK_BYTES", 2**20)
    if kind not in GAM_COLUMNS:
        raise ValueError(kind)
    if not path.is_file():
        raise ExportFileError(f"{path}: no such file")
    size = path.stat().st_size
    chunk_bytes = max(chunk_bytes, 1) if size > chunk_bytes else max(size, 1)  # a small file: one read
    try:
        if format_of(path, format) == "csv":
            yield from _csv_rows(path, kind, start, chunk_bytes)
        else:
            yield from _jsonl_rows(path, kind, start, chunk_bytes)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise ExportFileError(f"{path.name}: cannot be read ({exc.__class__.__name__}: {exc})") from None


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


def _csv_rows(path: Path, kind: str, start: Position, chunk_bytes: int) -> Iterator[Row]:
    header_lines = _lines(path, Position(), chunk_bytes)
    try:
        _, header_end, header_text = next(header_lines)
    except StopIteration:
        raise ExportFileError(f"{path.name}: empty: not a GAM {kind} export") from None
    finally:
        header_lines.close()
    try:
        header = next(csv.reader([header_text]))
    except csv.Error:
        header = []
    if REQUIRED_COLUMN[kind] not in header:
        raise ExportFileError(f"{path.name}: its first line has no {REQUIRED_COLUMN[kind]} column: not a GAM {kind} export")
    if start.line == 1:
        start = Position(header_end, 2)
    where = {"after": start}  # the position after the last line the CSV reader took

    def text_lines():
        for number, after, text in _lines(path, start, chunk_bytes):
            where["after"] = Position(after, number + 1)
            yield text

    lines = text_lines()
    reader = csv.reader(lines)
    while True:
        row_line = where["after"].line
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield Row(row_line, where["after"], None, f"not CSV ({exc})")
            reader = csv.reader(lines)  # go on with the next line
            continue
        if not any(v.strip() for v in values):
            continue
        row = dict(zip(header, values))
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


def gam_user(row: dict) -> dict:
    """A `gam print users` row → a users.list item (GAM's "Never" login: none)."""
    login = _text(row, "lastLoginTime")
    record = {
        "id": _text(row, "id"), "primaryEmail": _text(row, "primaryEmail"),
        "name": {"fullName": row.get("name.fullName") or ""},
        "orgUnitPath": row.get("orgUnitPath") or "",
        "creationTime": _text(row, "creationTime"),
        "lastLoginTime": None if login is None or login.strip().lower() == NEVER else login,
    }
    for column in ("isAdmin", "suspended"):
        flag = _boolean(row, column)
        if flag is not None:
            record[column] = flag
    return record


def gam_token(row: dict) -> dict:
    """A `gam all users print tokens` row → a tokens.list item with its user (userKey, else user)."""
    record = {
        "clientId": _text(row, "clientId"), "displayText": row.get("displayText") or "",
        "scopes": (row.get("scopes") or "").split(),
        "userKey": _text(row, "userKey") or _text(row, "user"), "user": _text(row, "user"),
    }
    for column in ("anonymous", "nativeApp"):
        flag = _boolean(row, column)
        if flag is not None:
            record[column] = flag
    return record
