"""A directory export on disk as a source (`manage.py import`, the admin's Import files): GAM's
CSV or JSON lines, read as a stream by syncapp.exportfiles. The steps see pages, as from any
provider: a page token is where the page starts in its file (byte offset and line), so a stopped
import resumes where its last committed batch ended.
"""

from collections.abc import Iterator
from itertools import islice

from ..exportfiles import FORMATS, ExportFileError, Position, count_records, given_fields, read_export
from ..records import Unreadable
from .base import ConfigError, Page, Provider, ProviderError

PAGE_RECORDS = 1000  # rows per page: a checkpoint's step within a file


def position_token(position: Position) -> str:
    return f"{position.offset}:{position.line}"


def token_position(token: str | None) -> Position:
    if not token:
        return Position()
    offset, line = token.split(":")
    return Position(int(offset), int(line))


class FileProvider(Provider):
    """config: {"users": path or None, "tokens": path or None, "format": "csv" | "jsonl" | None
    (None: from each name), "complete": whether the files are a whole export}."""

    name = "files"
    config_keys = ("users", "tokens", "format", "complete")
    lists_tokens = True  # a token export lists every token at once
    may_leave_out_users = True  # `gam all users print tokens` leaves out the suspended
    not_revocable = "an import is files, which cannot revoke: revoke the grants at the provider (GAM's `delete token`) and import again"

    @classmethod
    def clean_config(cls, config: dict) -> dict:
        cleaned = {"users": config.get("users"), "tokens": config.get("tokens"), "format": config.get("format") or None,
                   "complete": config.get("complete", False)}
        if not (cleaned["users"] or cleaned["tokens"]):
            raise ConfigError("users or tokens: give at least one file")
        for kind in ("users", "tokens"):
            if cleaned[kind] is not None and not isinstance(cleaned[kind], str):
                raise ConfigError(f"{kind} must be a file's path")
        if cleaned["format"] not in (None, *FORMATS):
            raise ConfigError(f"format must be one of {', '.join(FORMATS)}")
        if not isinstance(cleaned["complete"], bool):
            raise ConfigError("complete must be true or false")
        return cleaned

    @property
    def whole_directory(self) -> bool:
        """Only a whole export (--complete) says that what it lacks is gone."""
        return self.config["complete"]

    def user_count(self) -> int | None:
        """The users file's records (its lines): the users step's progress counts the file, not
        the users stored before."""
        if not self.config["users"]:
            return None
        try:
            return count_records(self.config["users"], "users", format=self.config["format"])
        except ExportFileError as exc:
            raise ProviderError(str(exc)) from None

    def given_fields(self, kind: str) -> frozenset[str] | None:
        """The columns the file has (exportfiles.given_fields); a whole export must have them all."""
        try:
            return given_fields(self.config[kind], kind, format=self.config["format"], complete=self.config["complete"])
        except ExportFileError as exc:
            raise ProviderError(str(exc)) from None

    def _pages(self, kind: str, page_token: str | None) -> Iterator[Page]:
        path = self.config[kind]
        if path is None:
            raise ProviderError(f"this import has no {kind} file")
        start = token_position(page_token)
        rows = read_export(path, kind, format=self.config["format"], start=start)
        try:
            while batch := list(islice(rows, PAGE_RECORDS)):
                records = [row.record if row.problem is None else Unreadable(row.problem) for row in batch]
                after = batch[-1].after
                yield Page(records, token=position_token(start), next_token=position_token(after),
                           lines=tuple(row.line for row in batch))
                start = after
        except ExportFileError as exc:
            raise ProviderError(str(exc)) from None

    def user_pages(self, page_token: str | None = None) -> Iterator[Page]:
        return self._pages("users", page_token)

    def token_pages(self, page_token: str | None = None) -> Iterator[Page]:
        return self._pages("tokens", page_token)
