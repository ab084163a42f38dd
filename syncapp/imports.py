"""Imports: a run whose users and tokens steps read directory exports on disk instead of the
provider (`manage.py import`, the admin's Import files). Here the files are checked and the run
recorded; providers/files.py reads them; an upload is streamed to BALLAST_IMPORT_DIR and removed
when its run ends (syncapp.runs).
"""

import shutil
import tempfile
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError

from .exportfiles import FORMATS, ExportFileError, export_suffix, given_fields
from .models import SyncRun, Tenant
from .runs import start_run


def import_source(*, users=None, tokens=None, format: str | None = None, complete: bool = False, uploaded: bool = False) -> dict:
    """The run's source: each file's absolute path, the format (None: from each name), whether the
    files are a whole export. Refused with ValidationError keyed by field: users, tokens, format."""
    errors: dict[str, str] = {}
    if format and format not in FORMATS:
        errors["format"] = f"unknown format {format!r}; choose from {', '.join(FORMATS)}"
    if not (users or tokens):
        errors["users"] = "give a users file, a tokens file, or both"
    source = {"users": None, "tokens": None, "format": format or None, "complete": bool(complete)}
    for kind, path in (("users", users), ("tokens", tokens)):
        if not path:
            continue
        path = Path(path).resolve()
        if not path.is_file():
            errors[kind] = f"{path}: no such file"
            continue
        try:
            # The file's format, and the columns it must have (all of them for a whole export):
            # refused here in one line, not row by row once the run reads it.
            given_fields(path, kind, format=format if format in FORMATS else None, complete=bool(complete))
        except ExportFileError as exc:
            errors[kind] = str(exc)
            continue
        source[kind] = str(path)
    if errors:
        raise ValidationError(errors)
    if uploaded:
        source["uploaded"] = True
    return source


def start_import(tenant: Tenant, source: dict, *, trigger: str = SyncRun.Trigger.IMPORT, enqueue: bool = True) -> SyncRun:
    """A run of the steps the files feed (users, tokens), then relations, as for a sync."""
    steps = [kind for kind in ("users", "tokens") if source.get(kind)] + ["relations"]
    return start_run(tenant=tenant, trigger=trigger, steps=steps, enqueue=enqueue, source=source)


def save_upload(upload, kind: str) -> Path:
    """Keep an uploaded file (Django's UploadedFile) in BALLAST_IMPORT_DIR for its run, under a
    generated name with the extensions of its own that say its format (.csv, .jsonl.gz…).
    Django streamed a large upload to a temporary file already (FILE_UPLOAD_MAX_MEMORY_SIZE): it
    is moved; a small one, held in memory, is written out in FILE_CHUNK_BYTES chunks."""
    folder = Path(settings.BALLAST_IMPORT_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = export_suffix(upload.name or "")  # the name is the sender's: only the format is taken from it
    with tempfile.NamedTemporaryFile("wb", dir=folder, prefix=f"{kind}-", suffix=suffix, delete=False) as out:
        if not hasattr(upload, "temporary_file_path"):
            for chunk in upload.chunks(settings.BALLAST_FILE_CHUNK_BYTES):
                out.write(chunk)
    if hasattr(upload, "temporary_file_path"):
        shutil.move(upload.temporary_file_path(), out.name)
    return Path(out.name)


def import_uploads(tenant: Tenant, form_data: dict) -> SyncRun:
    """The admin's Import files: the uploads kept, checked as `import` checks files, and the run
    queued; refused (ValidationError by field) with nothing kept."""
    paths = {kind: save_upload(form_data[kind], kind) for kind in ("users", "tokens") if form_data.get(kind)}
    try:
        source = import_source(**paths, format=form_data.get("format") or None, complete=form_data.get("complete", False), uploaded=True)
        return start_import(tenant, source)
    except Exception:  # refused or failed however it was: the uploads go, and the error goes on to the caller
        for path in paths.values():
            path.unlink(missing_ok=True)
        raise
