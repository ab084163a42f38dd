"""The export reader against hostile files: bombs, endless lines, broken text, odd line ends.

Each named test is a finding of this suite, or a case it proves handled; the property tests at
the end throw arbitrary bytes at the reader.
"""

import gzip
import json
import tracemalloc
import zlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncapp.exportfiles import ExportFileError, count_records, given_fields, read_export
from syncapp.models import DirectoryUser, SyncRun, Token

from ..factories import TenantFactory
from ..syncapp.test_imports import import_

# Imports carry their run out on a thread of their own, which must see the test's rows.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("batches_as_the_governor_sizes_them")]

HEADER = b"primaryEmail,id,name.fullName\n"
MB = 2**20


def gz_stream(path: Path, *parts: tuple[bytes, int]) -> Path:
    """A .gz of each (bytes, times) in turn, compressed as it is written: a file of a few hundred
    KB that expands to as much as asked."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: gzip framing
    with open(path, "wb") as out:
        for data, times in parts:
            for _ in range(times):
                out.write(compressor.compress(data))
        out.write(compressor.flush())
    return path


def peak_bytes(work) -> tuple[object, int]:
    """What `work()` returns, and the most Python memory it held at once."""
    tracemalloc.start()
    try:
        result = work()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def refusal_and_peak(work) -> tuple[str, int]:
    """The ExportFileError `work()` raises, in words, and the most Python memory it held at once."""
    def refused():
        with pytest.raises(ExportFileError) as refusal:
            work()
        return str(refusal.value)
    return peak_bytes(refused)


def rows_of(path: Path, kind: str = "users", **kwargs) -> list[tuple[int, str | None]]:
    return [(row.line, row.problem) for row in read_export(path, kind, **kwargs)]


@pytest.fixture
def tenant():
    return TenantFactory(slug="acme", provider="google", provider_config={"access_token": "x"})


# --- Findings: each failed before this suite, and is fixed ---------------------------------------

@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> Path:
    """300 KB that expands to 256 MB of NULs after a users header, without a newline."""
    return gz_stream(tmp_path_factory.mktemp("bomb") / "users.csv.gz", (HEADER, 1), (b"\0" * MB, 256))


def test_a_gzip_bomb_is_refused_at_FILE_MAX_BYTES_in_bounded_memory(bomb, settings):
    """Finding: a 200 KB gzip of zeros was read whole (114 s, 281 MB, before the line limit);
    there was no decompressed-size limit at all."""
    assert bomb.stat().st_size < MB
    settings.BALLAST_FILE_MAX_BYTES = 16 * MB
    for read in (lambda: list(read_export(bomb, "users")), lambda: count_records(bomb, "users")):
        refusal, peak = refusal_and_peak(read)
        assert refusal == ("users.csv.gz: more than FILE_MAX_BYTES (16,777,216 bytes) once decompressed: "
                           "refused (raise FILE_MAX_BYTES for an export that large)")
        assert peak < 4 * MB  # a 1 MB chunk and a line no longer than LINE_MAX_BYTES, never the 16 MB read


def test_an_import_of_a_gzip_bomb_fails_naming_the_limit_and_writes_nothing(bomb, tenant, settings):
    settings.BALLAST_FILE_MAX_BYTES = 16 * MB
    run = import_("--users", str(bomb))
    assert run["status"] == "failed"
    assert "more than FILE_MAX_BYTES (16,777,216 bytes) once decompressed" in SyncRun.objects.get(pk=run["id"]).step_records.get(name="users").error
    assert not DirectoryUser.objects.exists()


def test_a_100_MB_line_is_one_invalid_row_naming_its_line_in_bounded_memory(tmp_path):
    """Finding: the line was held whole (and re-split at every 1 MB chunk): 100 MB and more."""
    path = gz_stream(tmp_path / "users.csv.gz", (HEADER + b"a@example.org,1,Ada\nb@example.org,2,", 1), (b"B" * MB, 100),
                     (b"\nc@example.org,3,Cy\n", 1))
    rows, peak = peak_bytes(lambda: rows_of(path))
    assert rows == [(2, None), (3, "line longer than LINE_MAX_BYTES (1,048,576 bytes): not read"), (4, None)]
    assert peak < 4 * MB


@pytest.mark.parametrize("name", ["users.csv", "users.jsonl", "users.csv.gz", "users.jsonl.gz"])
def test_a_line_past_the_limit_is_skipped_and_the_next_read_from_its_offset(tmp_path, settings, name):
    settings.BALLAST_LINE_MAX_BYTES = 4096
    first, last = ((b"a@example.org,1,Ada\n", b"c@example.org,3,Cy") if name.startswith("users.csv")
                   else (b'{"id": "1", "primaryEmail": "a@example.org"}\n', b'{"id": "3", "primaryEmail": "c@example.org"}'))
    data = (HEADER if ".csv" in name else b"") + first + b"x" * 100_000 + b"\n" + last  # the last line has no newline
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    rows = list(read_export(path, "users", chunk_bytes=4096))
    offset = 1 if ".csv" in name else 0
    assert [(r.line - offset, r.problem) for r in rows] == [(1, None), (2, "line longer than LINE_MAX_BYTES (4,096 bytes): not read"), (3, None)]
    assert rows[-1].after.offset == len(data)
    assert [r.record["id"] for r in read_export(path, "users", start=rows[0].after) if r.record] == ["3"]  # resumed past the long line


@pytest.mark.parametrize("name, bad, good", [
    ("users.csv", HEADER + b"a@example.org,1,Ada\nb@example.org,2,B\xe9a\n", b"c@example.org,3,Cy\n"),
    ("users.jsonl", b'{"id": "1", "primaryEmail": "a@example.org"}\n{"id": "2", "primaryEmail": "b@example.org", "name": {"fullName": "B\xe9a"}}\n',
     b'{"id": "3", "primaryEmail": "c@example.org"}\n'),
])
def test_a_line_that_is_not_utf8_past_the_first_is_one_invalid_row(tmp_path, tenant, name, bad, good):
    """Finding: one Latin-1 byte anywhere refused the whole file (a million rows for one)."""
    path = tmp_path / name
    path.write_bytes(bad + good)
    offset = 1 if name.endswith(".csv") else 0
    byte = bad.rindex(b"\xe9") - bad.rindex(b"\n", 0, -1)  # where in its line the Latin-1 é is
    assert [(line - offset, problem) for line, problem in rows_of(path)] == [(1, None), (2, f"not UTF-8 text (byte {byte} of the line)"), (3, None)]
    run = import_("--users", str(path))
    step = SyncRun.objects.get(pk=run["id"]).step_records.get(name="users")
    assert (step.created, step.invalid) == (2, 1)
    assert step.invalid_samples[0]["reason"].startswith(f"line {2 + offset}: not UTF-8 text")


def test_a_header_that_is_not_utf8_refuses_the_file(tmp_path):
    path = tmp_path / "users.csv"
    path.write_bytes(b"primaryEmail,id,n\xe4me\na@example.org,1,x\n")
    with pytest.raises(ExportFileError, match=r"^users.csv: line 1 \(the header\): not UTF-8 text \(byte 18 of the line\): not a GAM users export$"):
        given_fields(path, "users")


def test_a_header_past_the_line_limit_refuses_the_file(tmp_path, settings):
    settings.BALLAST_LINE_MAX_BYTES = 4096
    path = tmp_path / "users.csv"
    path.write_bytes(b"primaryEmail,id," + b"x" * 5000 + b"\na@example.org,1,x\n")
    with pytest.raises(ExportFileError, match=r"line 1 \(the header\): line longer than LINE_MAX_BYTES \(4,096 bytes\): not read"):
        list(read_export(path, "users"))


def test_a_json_line_nested_too_deep_for_the_parser_is_one_invalid_row(tmp_path):
    path = tmp_path / "users.jsonl"
    path.write_bytes(b'{"id": "1", "primaryEmail": "a@example.org"}\n' + b"[" * 200_000 + b"\n" + b'{"id": "3", "primaryEmail": "c@example.org"}\n')
    assert rows_of(path) == [(1, None), (2, "not JSON (nested too deep)"), (3, None)]


def test_a_header_of_control_characters_is_refused_in_one_line(tmp_path):
    """Found by an exploring run: a header of a lone escape character named a column holding a
    newline, and the refusal took two lines."""
    path = tmp_path / "users.csv"
    path.write_bytes(b"\\\n")
    with pytest.raises(ExportFileError) as refused:
        list(read_export(path, "users"))
    assert "\n" not in str(refused.value) and "no id and no primaryEmail column" in str(refused.value)


# --- Handled already: proved here -----------------------------------------------------------------

def test_nul_bytes_make_their_row_invalid_and_never_reach_the_database(tmp_path, tenant):
    users = tmp_path / "users.csv"
    users.write_bytes(HEADER + b"a@example.org,1,Ada\nb@example.org,2\x00,B\nc@example.org,3,C\x00y\n")
    tokens = tmp_path / "tokens.jsonl"
    tokens.write_text("\n".join(json.dumps(t) for t in [
        {"userKey": "1", "clientId": "ok.apps", "scopes": ["openid"]},
        {"userKey": "1", "clientId": "nul\u0000.apps"},
        {"userKey": "1", "clientId": "two.apps", "displayText": "Two\u0000"},
        {"userKey": "1", "clientId": "three.apps", "scopes": ["openid\u0000"]},
    ]) + "\n")
    run = import_("--users", str(users), "--tokens", str(tokens))
    steps = {s.name: s for s in SyncRun.objects.get(pk=run["id"]).step_records.all()}
    assert [s["reason"] for s in steps["users"].invalid_samples] == ["line 3: id contains a NUL byte", "line 4: name.fullName contains a NUL byte"]
    assert [s["reason"] for s in steps["tokens"].invalid_samples] == [
        "line 2: clientId contains a NUL byte", "line 3: displayText contains a NUL byte", "line 4: scopes is not a list of text"]
    assert list(DirectoryUser.objects.values_list("external_id", flat=True)) == ["1"]
    assert list(Token.objects.values_list("application__client_id", flat=True)) == ["ok.apps"]


def test_a_hundred_thousand_columns_are_read_in_bounded_memory(tmp_path, tenant):
    extra = b"".join(b",c%d" % n for n in range(100_000))
    path = tmp_path / "users.csv"
    path.write_bytes(HEADER.rstrip(b"\n") + extra + b"\n" + b"".join(b"u%d@example.org,%d,U%d" % (n, n, n) + b",v" * 100_000 + b"\n" for n in range(3)))
    assert path.stat().st_size > MB
    rows, peak = peak_bytes(lambda: [row.record for row in read_export(path, "users")])
    assert [r["id"] for r in rows] == ["0", "1", "2"]
    assert peak < 32 * MB
    run = import_("--users", str(path))
    assert run["steps"]["users"]["created"] == 3


def test_a_hundred_thousand_columns_without_the_needed_ones_are_refused_in_one_short_line(tmp_path):
    path = tmp_path / "users.csv"
    path.write_bytes(b",".join(b"c%d" % n for n in range(100_000)) + b"\n")
    with pytest.raises(ExportFileError) as refused:
        given_fields(path, "users")
    assert "(its columns: c0, c1, c2, c3, c4, c5, c6, c7, …)" in str(refused.value) and len(str(refused.value)) < 300


@pytest.mark.parametrize("name", ["users.csv", "users.jsonl"])
def test_a_bom_and_crlf_line_ends_read_as_plain_lf(tmp_path, name):
    lines = ([b"primaryEmail,id,name.fullName", b"a@example.org,1,Ada", b'b@example.org,2,"Bea\r\non two lines"']
             if name.endswith(".csv") else [b'{"id": "1", "primaryEmail": "a@example.org"}', b'{"id": "2", "primaryEmail": "b@example.org"}'])
    plain, windows = tmp_path / name, tmp_path / f"crlf-{name}"
    plain.write_bytes(b"\n".join(lines) + b"\n")
    windows.write_bytes(b"\xef\xbb\xbf" + b"\r\n".join(lines) + b"\r\n")
    assert [r.record for r in read_export(windows, "users")] == [r.record for r in read_export(plain, "users")]
    assert all(r.problem is None for r in read_export(windows, "users"))


# --- Properties: any bytes at all ------------------------------------------------------------------

body_lines = st.lists(st.one_of(
    st.binary(max_size=80),
    st.sampled_from([b"a@example.org,1,Ada", b'{"id": "1", "primaryEmail": "a@example.org"}', b'"open quote', b"\xef\xbb\xbf", b"\r", b"\0"]),
), max_size=12)


@pytest.fixture
def short_lines(settings):
    """Lines past 1 KB are too long: set once per test (an override per example would nest)."""
    settings.BALLAST_LINE_MAX_BYTES = 1024


@pytest.mark.parametrize("name, head", [("users.csv", HEADER), ("users.jsonl", b'{"id": "0", "primaryEmail": "z@example.org"}\n'),
                                        ("users.csv.gz", HEADER)])
@given(lines=body_lines, chunk=st.integers(min_value=1, max_value=64))
def test_any_bytes_give_rows_in_order_or_one_refusal_and_resume_from_any_row(tmp_path, short_lines, name, head, lines, chunk):
    """Whatever follows a good first line: rows come in line order with a record or a problem,
    nothing but ExportFileError escapes, and reading on from any row's checkpoint gives the rest."""
    data = head + b"\n".join(lines)
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    try:
        rows = list(read_export(path, "users", chunk_bytes=chunk))
    except ExportFileError:
        return  # a refusal in one line is an answer; anything else is a finding
    assert [r.line for r in rows] == sorted({r.line for r in rows})
    assert all((r.record is None) != (r.problem is None) for r in rows)
    assert all(r.after.offset <= len(data) for r in rows)
    for n, row in enumerate(rows[:-1]):
        again = list(read_export(path, "users", start=row.after, chunk_bytes=chunk))
        assert [(r.line, r.record, r.problem) for r in again] == [(r.line, r.record, r.problem) for r in rows[n + 1:]]
    assert count_records(path, "users") >= len(rows)


@given(data=st.binary(max_size=400))
def test_any_bytes_as_a_whole_file_are_rows_or_one_refusal(tmp_path, data):
    for name in ("users.csv", "users.jsonl", "tokens.csv"):
        path = tmp_path / name
        path.write_bytes(data)
        try:
            rows = list(read_export(path, name.split(".")[0]))
        except ExportFileError as refused:
            assert "\n" not in str(refused)
            continue
        assert all(r.line >= 1 and r.after.offset <= len(data) for r in rows)
