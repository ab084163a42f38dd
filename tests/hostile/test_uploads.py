"""The admin's Import files against hostile upload names: whatever the sender calls a file, it is
kept in IMPORT_DIR under a name of Ballast's own, with only its format's extensions."""

from pathlib import Path

import pytest
from django.urls import reverse
from hypothesis import given
from hypothesis import strategies as st

from syncapp.exportfiles import export_suffix
from syncapp.models import SyncRun

from ..factories import TenantFactory

pytestmark = pytest.mark.django_db

USERS = b"primaryEmail,id\na@example.org,1\n"
BOUNDARY = "hostile-boundary"


def multipart(filename: bytes, content: bytes = USERS) -> bytes:
    """A form with one users file, its name as the sender wrote it, byte for byte."""
    return (f"--{BOUNDARY}\r\n".encode() + b'Content-Disposition: form-data; name="users"; filename="' + filename + b'"\r\n'
            b"Content-Type: text/csv\r\n\r\n" + content + f"\r\n--{BOUNDARY}--\r\n".encode())


@pytest.fixture
def upload(admin_client, tmp_path, settings):
    """Post a users file under a name; the answer, and every file under tmp_path afterwards."""
    settings.BALLAST_IMPORT_DIR = tmp_path / "imports"
    tenant = TenantFactory(slug="acme")
    url = reverse("admin:syncapp_tenant_import_files", args=[tenant.pk])

    def post(filename: bytes):
        response = admin_client.post(url, multipart(filename), content_type=f"multipart/form-data; boundary={BOUNDARY}")
        return response, sorted(p for p in tmp_path.rglob("*") if p.is_file())

    return post


def kept_inside(files: list[Path], folder: Path) -> None:
    assert all(p.parent == folder and p.name.startswith("users-") for p in files), files
    assert all(run.source["users"] in (None, *map(str, files)) for run in SyncRun.objects.all())


@pytest.mark.parametrize("filename, suffix", [
    (b"../../../etc/cron.d/users.csv", ".csv"),
    (b"/etc/ballast/users.csv", ".csv"),
    (b"C:\\\\Windows\\\\users.csv", ".csv"),
    (b"users.csv\x00.sh", ""),
    (b"users\x00.csv", ".csv"),
    (b"x" * 300 + b".csv", ".csv"),
    (b"USERS.CSV", ".csv"),
    (b"users.csv.exe", ""),
    (b"..", ""),
])
def test_an_upload_is_kept_under_a_generated_name_whatever_it_is_called(upload, tmp_path, filename, suffix):
    response, files = upload(filename)
    assert response.status_code in (200, 302)
    kept_inside(files, tmp_path / "imports")
    if response.status_code == 302:  # the run was queued: its file waits for it
        assert [p.name.endswith(suffix) for p in files] == [True] and suffix
        assert SyncRun.objects.get().source["users"] == str(files[0])
    else:  # refused: nothing kept
        assert files == [] and 'class="errorlist' in response.content.decode()


@pytest.mark.parametrize("name, suffix", [("users.csv", ".csv"), ("a/b/users.JSONL", ".jsonl"), ("u.ndjson.gz", ".ndjson.gz"), ("u.gz", ""),
                                          ("u.csv.tar.gz", ""), ("u.\x00csv", ".csv"), ("", ""), ("u." + "c" * 300, "")])
def test_only_a_formats_extensions_are_taken_from_a_name(name, suffix):
    assert export_suffix(name) == suffix


@given(filename=st.binary(max_size=80).filter(lambda b: b'"' not in b and b"\r" not in b and b"\n" not in b)
       | st.text(max_size=60).map(lambda t: t.encode("utf-8", "surrogatepass").replace(b'"', b"").replace(b"\r", b"").replace(b"\n", b"") + b".csv"))
def test_any_upload_name_is_answered_and_kept_only_in_the_import_folder(upload, tmp_path, filename):
    response, files = upload(filename)
    assert response.status_code in (200, 302)
    kept_inside(files, tmp_path / "imports")
