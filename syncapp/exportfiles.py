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
from enum import Enum
from pathlib import Path

from django.conf import settings

FORMATS = ("csv", "jsonl")
SUFFIX_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}  # a name's extension, optionally before .gz
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


def export_suffix(name: str) -> str:
    """The extensions of a file's name that say its format (.csv, .jsonl, .ndjson, each optionally
    .gz), lower-cased; "" when it has none of them. Nothing else of a name given from outside (an
    upload's) is kept: no path, no NUL, no length."""
    suffixes = [s.lower() for s in Path(name.replace("\x00", "")).suffixes[-2:]]
    gz = [".gz"] if suffixes[-1:] == [".gz"] else []
    kind = suffixes[-2:-1] if gz else suffixes[-1:]
    return "".join(kind + gz) if kind and kind[0] in SUFFIX_FORMATS else ""


def format_of(path: Path | str, given: str | None = None) -> str:
    """csv or jsonl, as given, else from the name (.csv, .jsonl or .ndjson, optionally .gz)."""
    if given:
        if given not in FORMATS:
            raise ExportFileError(f"unknown format {given!r}; choose from {', '.join(FORMATS)}")
        return given
    kind = SUFFIX_FORMATS.get(export_suffix(Path(path).name).removesuffix(".gz"))
    if kind is None:
        raise ExportFileError(f"{Path(path).name}: cannot tell the format from the name; name it .csv, .jsonl or .ndjson (optionally .gz), or say --format")
    return kind


class Unread(Enum):
    """Why a line was not read as text."""

    TOO_LONG = "too long"  # longer than LINE_MAX_BYTES: skipped, never held
    NOT_TEXT = "not UTF-8"


@dataclass(frozen=True)
class Line:
    """A line of the file: its number, the byte offset after it, and its text with its newline;
    or, for a line that cannot be read as text, "", why not and the words for it."""

    number: int
    after: int
    text: str
    unread: Unread | None = None
    problem: str | None = None


def _line(raw: bytes, number: int, after: int, first: bool) -> Line:
    if first:  # Excel saves CSV with a BOM; its bytes still count
        raw = raw.removeprefix(codecs.BOM_UTF8)
    try:
        return Line(number, after, raw.decode("utf-8"))  # a UTF-8 character never contains a newline byte: lines decode alone
    except UnicodeDecodeError as exc:
        return Line(number, after, "", Unread.NOT_TEXT, f"not UTF-8 text (byte {exc.start + 1} of the line)")


def _too_long(number: int, after: int, limit: int) -> Line:
    return Line(number, after, "", Unread.TOO_LONG, f"line longer than LINE_MAX_BYTES ({limit:,} bytes): not read")


def _chunks(path: Path, offset: int, chunk_bytes: int) -> Iterator[bytes]:
    """The file's bytes from `offset`, decompressed as they are read when it is gzip (.gz).
    ExportFileError once more than FILE_MAX_BYTES have been read: a small .gz must not expand
    without end."""
    most, compressed = settings.BALLAST_FILE_MAX_BYTES, path.suffix.lower() == ".gz"
    with (gzip.open if compressed else open)(path, "rb") as raw:
        if offset:
            raw.seek(offset)  # gzip seeks by decompressing up to there: still a stream
        while chunk := raw.read(chunk_bytes):
            offset += len(chunk)
            if offset > most:
                raise ExportFileError(f"{path.name}: more than FILE_MAX_BYTES ({most:,} bytes){' once decompressed' if compressed else ''}: "
                                      "refused (raise FILE_MAX_BYTES for an export that large)")
            yield chunk


def _lines(path: Path, start: Position, chunk_bytes: int) -> Iterator[Line]:
    """The lines from `start`, read chunk_bytes at a time: only the chunk and an unfinished line
    are ever held, and an unfinished line no longer than LINE_MAX_BYTES (a longer one is skipped
    to its end as it is read, and comes out as a problem)."""
    limit = settings.BALLAST_LINE_MAX_BYTES
    offset, number, pending, skipping = start.offset, start.line, b"", False
    for chunk in _chunks(path, start.offset, chunk_bytes):
        *complete, pending = (pending + chunk).split(b"\n")
        for line in complete:
            first, offset = offset == 0, offset + len(line) + 1
            yield _too_long(number, offset, limit) if skipping or len(line) >= limit else _line(line + b"\n", number, offset, first)
            skipping = False
            number += 1
        if len(pending) >= limit:  # not held on to: skipped to the line's end
            offset, pending, skipping = offset + len(pending), b"", True
    if pending or skipping:
        first, offset = offset == 0, offset + len(pending)
        yield _too_long(number, offset, limit) if skipping else _line(pending, number, offset, first)


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
    with _read_or_refuse(path):
        for chunk in _chunks(path, 0, chunk_bytes):
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
    for line in _lines(path, start, chunk_bytes):
        after = Position(line.after, line.number + 1)
        if line.unread:
            if first and line.unread is Unread.NOT_TEXT:
                raise ExportFileError(f"{path.name}: line {line.number} is not UTF-8 text: not an export")
            yield Row(line.number, after, None, line.problem)
            continue
        if not line.text.strip():
            continue
        try:
            record = json.loads(line.text)
        except RecursionError:  # nested deeper than Python's parser goes
            yield Row(line.number, after, None, "not JSON (nested too deep)")
            continue
        except ValueError as exc:
            if first:
                raise ExportFileError(f"{path.name}: line {line.number} is not JSON: not a JSON lines export") from None
            yield Row(line.number, after, None, f"not JSON ({exc.__class__.__name__})")
            continue
        if not isinstance(record, dict):
            if first:
                raise ExportFileError(f"{path.name}: line {line.number} is not a JSON object: not a JSON lines export")
            yield Row(line.number, after, None, "not a JSON object")
            continue
        first = False
        if kind == "tokens" and "userKey" not in record and "user" in record:
            record = {**record, "userKey": record["user"]}
        yield Row(line.number, after, record)


def _csv_header(path: Path, kind: str, chunk_bytes: int) -> tuple[list[str], Position]:
    """The CSV's column names and where its first row starts; ExportFileError, in one line naming
    the columns and the gam command that writes them, when the export cannot be read without them."""
    lines = _lines(path, Position(), chunk_bytes)
    try:
        line = next(lines)
    except StopIteration:
        raise ExportFileError(f"{path.name}: empty: not a GAM {kind} export") from None
    finally:
        lines.close()
    if line.unread:
        raise ExportFileError(f"{path.name}: line 1 (the header): {line.problem}: not a GAM {kind} export")
    try:
        header = next(csv.reader([line.text], **GAM_DIALECT))
    except (csv.Error, StopIteration):
        header = []
    missing = [" or ".join(choice) for choice in REQUIRED_COLUMNS[kind] if not set(choice) & set(header)]
    if missing:
        shown = ", ".join(" ".join(column.split()) for column in header[:8]) + (", …" if len(header) > 8 else "")  # one line, whatever they hold
        raise ExportFileError(
            f"{path.name}: no {' and no '.join(missing)} column, so not a GAM {kind} export Ballast can read "
            f"(its columns: {shown or 'none'}); write it with `{GAM_COMMANDS[kind]}`"
        )
    return header, Position(line.after, 2)


def _csv_rows(path: Path, kind: str, start: Position, chunk_bytes: int) -> Iterator[Row]:
    header, first_row = _csv_header(path, kind, chunk_bytes)
    given = set(header) & set(GAM_COLUMNS[kind])
    if start.line == 1:
        start = first_row
    where = {"after": start, "unread": None}  # the position after the last line the CSV reader took; a line it could not

    def text_lines():
        for line in _lines(path, start, chunk_bytes):
            where["after"] = Position(line.after, line.number + 1)
            if line.unread:  # the reader gets an empty line in its place: the row it falls in is invalid
                where["unread"] = where["unread"] or line.problem
            yield line.text or "\n"

    lines = text_lines()
    reader = csv.reader(lines, **GAM_DIALECT)
    while True:
        row_line = where["after"].line
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            where["unread"] = None
            yield Row(row_line, where["after"], None, f"not CSV ({exc})")
            reader = csv.reader(lines, **GAM_DIALECT)  # go on with the next line
            continue
        if unread := where["unread"]:
            where["unread"] = None
            yield Row(row_line, where["after"], None, unread)
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
