import gzip
import json
import tracemalloc

import pytest

from syncapp.exportfiles import ExportFileError, Position, format_of, read_export
from syncapp.records import InvalidRecord, parse_token, parse_user

USERS_CSV = (
    "primaryEmail,id,name.givenName,name.fullName,isAdmin,suspended,orgUnitPath,creationTime,lastLoginTime\n"
    "ada@example.org,101,Ada,Ada Lovelace,True,False,/Engineering,2020-01-02T03:04:05.000Z,2026-11-01T10:00:00.000Z\n"
    "grace@example.org,102,Grace,\"Hopper, Grace\",False,True,/,2021-02-03T04:05:06.000Z,Never\n"
)
TOKENS_CSV = (
    "user,clientId,displayText,anonymous,nativeApp,scopes,userKey\n"
    "ada@example.org,slack.apps,Slack,False,False,openid https://www.googleapis.com/auth/calendar,101\n"
    "grace@example.org,zoom.apps,Zoom,False,True,openid,102\n"
)


def write(tmp_path, name: str, text: str | bytes):
    path = tmp_path / name
    data = text.encode() if isinstance(text, str) else text
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    return path


@pytest.mark.parametrize("name", ["users.csv", "users.csv.gz"])
def test_a_gam_users_csv_reads_as_directory_users(tmp_path, name):
    rows = list(read_export(write(tmp_path, name, USERS_CSV), "users"))
    assert [r.line for r in rows] == [2, 3] and all(r.problem is None for r in rows)
    ada, grace = (parse_user(r.record) for r in rows)
    assert (ada["external_id"], ada["primary_email"], ada["full_name"], ada["is_admin"], ada["org_unit"]) == (
        "101", "ada@example.org", "Ada Lovelace", True, "/Engineering")
    assert (grace["full_name"], grace["is_suspended"], grace["last_login_at"]) == ("Hopper, Grace", True, None)  # "Never": no login


def test_a_gam_tokens_csv_reads_as_tokens_with_their_user(tmp_path):
    rows = list(read_export(write(tmp_path, "tokens.csv", TOKENS_CSV), "tokens"))
    first = rows[0].record
    assert (first["userKey"], first["user"]) == ("101", "ada@example.org")
    token = parse_token(first)
    assert token["client_id"] == "slack.apps" and token["scopes"] == ["https://www.googleapis.com/auth/calendar", "openid"]
    assert parse_token(rows[1].record)["native_app"] is True


@pytest.mark.parametrize("name", ["users.jsonl", "users.ndjson.gz"])
def test_json_lines_are_directory_api_objects(tmp_path, name):
    lines = [{"id": "101", "primaryEmail": "ada@example.org", "suspended": False}, {"id": "102", "primaryEmail": "grace@example.org"}]
    path = write(tmp_path, name, "".join(json.dumps(u) + "\n" for u in lines) + "\n")  # a blank last line is no record
    assert [r.record for r in read_export(path, "users")] == lines


def test_bad_rows_are_problems_naming_their_line_and_the_rest_goes_on(tmp_path):
    csv_path = write(tmp_path, "users.csv", USERS_CSV.splitlines()[0] + "\n"
                     "ada@example.org,101,Ada,Ada,Maybe,False,/,,\n"
                     "bad\x00row@example.org,103,B,B,False,False,/,,\n"
                     "grace@example.org,102,Grace,Grace,False,False,/,,\n"
                     f"huge@example.org,104,H,\"{'x' * 140_000}\",False,False,/,,\n"
                     "alan@example.org,105,Alan,Alan,False,False,/,,\n")
    rows = list(read_export(csv_path, "users"))
    assert [r.problem for r in rows] == [
        "isAdmin is 'Maybe', not True or False", None, None, "not CSV (field larger than field limit (131072))", None]
    assert [r.line for r in rows] == [2, 3, 4, 5, 6]
    assert rows[4].record["id"] == "105" and rows[4].line == 6
    with pytest.raises(InvalidRecord, match="NUL"):  # read, then refused by the same validation as a sync's
        parse_user(rows[1].record)
    assert rows[2].record["id"] == "102" and rows[2].line == 4
    jsonl = write(tmp_path, "tokens.jsonl", '{"clientId": "a", "userKey": "1"}\n{oops\n[1]\n{"clientId": "b", "user": "x@example.org"}\n')
    rows = list(read_export(jsonl, "tokens"))
    assert [r.problem for r in rows] == [None, "not JSON (JSONDecodeError)", "not a JSON object", None]
    assert [r.line for r in rows] == [1, 2, 3, 4]
    assert rows[3].record["userKey"] == "x@example.org"  # "user" stands in for a missing userKey


@pytest.mark.parametrize("name, content, words", [
    ("users.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "line 1 (the header): not UTF-8 text (byte 1 of the line): not a GAM users export"),
    ("users.csv", "name,email\nAda,ada@example.org\n", "no id and no primaryEmail column, so not a GAM users export"),
    ("tokens.csv", USERS_CSV, "no clientId and no userKey or user column, so not a GAM tokens export"),
    ("users.csv", "", "empty: not a GAM users export"),
    ("users.jsonl", "primaryEmail,id\nada@example.org,1\n", "line 1 is not JSON: not a JSON lines export"),
    ("users.jsonl", "[1, 2]\n", "line 1 is not a JSON object"),
    ("users.csv.gz", b"not gzip at all", "cannot be read (BadGzipFile"),
])
def test_a_file_that_is_not_the_export_fails_in_one_line(tmp_path, name, content, words):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ExportFileError) as refused:
        list(read_export(path, name.split(".")[0]))
    assert words in str(refused.value) and "\n" not in str(refused.value)


def test_format_comes_from_the_name_or_is_said(tmp_path):
    assert [format_of(n) for n in ("a.csv", "a.CSV.gz", "a.jsonl", "a.ndjson.gz")] == ["csv", "csv", "jsonl", "jsonl"]
    assert format_of("export.txt", "csv") == "csv"
    with pytest.raises(ExportFileError, match="cannot tell the format from the name"):
        format_of("export.txt")
    with pytest.raises(ExportFileError, match="unknown format 'xml'"):
        format_of("a.csv", "xml")


@pytest.mark.parametrize("name", ["tokens.csv", "tokens.csv.gz", "tokens.jsonl"])
def test_a_read_resumes_at_any_rows_position_with_the_same_rows(tmp_path, name):
    if name.endswith("jsonl"):
        text = "".join(json.dumps({"clientId": f"app{i}", "userKey": str(i), "displayText": "Zoë ✓"}) + "\n" for i in range(40))
    else:
        text = TOKENS_CSV.splitlines()[0] + "\n" + "".join(f"u{i}@example.org,app{i},\"Zoë, ✓\",False,False,openid,{i}\n" for i in range(40))
    path = write(tmp_path, name, "\ufeff" + text if name.endswith(".csv") else text)  # a BOM, as Excel writes
    whole = list(read_export(path, "tokens", chunk_bytes=7))  # chunks that split lines and characters
    assert len(whole) == 40 and all(r.problem is None for r in whole)
    assert whole == list(read_export(path, "tokens"))  # the same, whatever the chunk size
    for stop in (0, 13, 38):
        resumed = list(read_export(path, "tokens", start=whole[stop].after, chunk_bytes=64))
        assert resumed == whole[stop + 1 :]
    assert whole[-1].after == Position(len(gzip.decompress(path.read_bytes())) if name.endswith(".gz") else path.stat().st_size,
                                       whole[-1].line + 1)


def test_memory_does_not_grow_with_the_file(tmp_path):
    header = TOKENS_CSV.splitlines()[0] + "\n"
    row = "someone@example.org,some-app.apps.googleusercontent.com,Some App,False,False,openid email profile,1234567890\n"
    small, large = write(tmp_path, "small.csv", header + row * 500), write(tmp_path, "large.csv", header + row * 40_000)  # 55 KB, 4.4 MB

    def peak(path) -> int:
        tracemalloc.start()
        for _ in read_export(path, "tokens", chunk_bytes=64 * 1024):
            pass
        size = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return size

    assert peak(large) < 2 * peak(small) + 200_000  # 80× the rows, not 80× the memory
