"""`manage.py import`: GAM CSV and JSON lines exports (plain and gzip) read by a run's users and
tokens steps; malformed rows, garbage files, --complete deletions, resuming from a checkpoint."""

import json
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from syncapp.models import Application, DirectoryUser, Status, SyncRun, Token, UserAppRelation
from syncapp.providers import ProviderError
from syncapp.providers import files as file_provider

from ..conftest import demo_org
from ..factories import TenantFactory
from ..gamfiles import TOKEN_COLUMNS, USER_COLUMNS, export, gam_token_rows, gam_user_rows, write_csv

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("batches_as_the_governor_sizes_them")]


@pytest.fixture
def tenant():
    return TenantFactory(slug="acme", provider="google", provider_config={"access_token": "x"})  # never called: files only


def import_(*args) -> dict:
    """Run `manage.py import acme … --wait --json` here (no cluster: in this process); the run as JSON."""
    out = StringIO()
    try:
        call_command("import", "acme", *args, "--wait", "--json", stdout=out, stderr=StringIO())
    except CommandError:
        pass  # a run that did not complete exits 1; its JSON was printed first
    return json.loads(out.getvalue())


def pairs(tokens: dict[str, list[dict]]) -> set[tuple[str, str]]:
    return {(user, t["clientId"]) for user, ts in tokens.items() for t in ts}


@pytest.mark.parametrize("format, gz", [("csv", False), ("csv", True), ("jsonl", False), ("jsonl", True)])
def test_an_export_imports_users_tokens_and_relations(tmp_path, tenant, format, gz, settings):
    settings.BALLAST_FILE_CHUNK_BYTES = 4096  # many chunks: lines split across them
    users, tokens = demo_org(150, apps=10)
    users_file, tokens_file = export(tmp_path, users, tokens, format=format, gz=gz)

    run = import_("--users", str(users_file), "--tokens", str(tokens_file))
    assert run["status"] == "completed", run
    assert run["steps"]["users"]["created"] == 150 and run["steps"]["users"]["invalid"] == 0
    assert run["steps"]["tokens"]["created"] == len(pairs(tokens))
    assert run["steps"]["relations"]["created"] == len(pairs(tokens))
    stored = SyncRun.objects.get(pk=run["id"])
    assert stored.trigger == "import" and stored.source["users"] == str(users_file.resolve())
    assert set(Token.objects.values_list("user__external_id", "application__client_id")) == pairs(tokens)
    never = [u["id"] for u in users if u["lastLoginTime"].startswith("1970")]
    assert never and not DirectoryUser.objects.filter(external_id__in=never, last_login_at__isnull=False).exists()
    admins = {u["id"] for u in users if u["isAdmin"]}
    assert set(DirectoryUser.objects.filter(is_admin=True).values_list("external_id", flat=True)) == admins

    again = import_("--users", str(users_file), "--tokens", str(tokens_file))
    for step in ("users", "tokens", "relations"):
        assert again["steps"][step]["created"] == again["steps"][step]["updated"] == 0, step


def test_bad_rows_are_counted_invalid_with_their_line_and_the_rest_imported(tmp_path, tenant):
    users, tokens = demo_org(20, apps=4)
    rows = list(gam_user_rows(users))
    rows[3]["id"] = ""  # line 5: no id
    rows[7]["suspended"] = "Maybe"  # line 9: not a boolean
    rows[9]["primaryEmail"] = "nul\x00@example.org"  # line 11: a NUL byte
    users_file = write_csv(tmp_path / "users.csv", USER_COLUMNS, rows)
    token_rows = list(gam_token_rows(users, tokens))
    token_rows[0]["clientId"] = ""  # line 2: no clientId
    tokens_file = write_csv(tmp_path / "tokens.csv", TOKEN_COLUMNS, token_rows)
    with open(tmp_path / "more.jsonl", "w") as out:
        out.write(json.dumps({"userKey": users[0]["id"], "clientId": "ok.apps", "scopes": ["openid"]}) + "\n{not json\n")

    run = import_("--users", str(users_file), "--tokens", str(tokens_file))
    assert run["status"] == "completed_with_errors"
    samples = SyncRun.objects.get(pk=run["id"]).step_records.get(name="users").invalid_samples
    assert run["steps"]["users"]["invalid"] == 3 and run["steps"]["users"]["created"] == 17
    assert [s["reason"] for s in samples] == ["line 5: missing id", "line 9: suspended is 'Maybe', not True or False",
                                              "line 11: primaryEmail contains a NUL byte"]
    tokens_step = SyncRun.objects.get(pk=run["id"]).step_records.get(name="tokens")
    assert tokens_step.invalid == 1 and tokens_step.invalid_samples == [{"key": None, "reason": "line 2: missing clientId"}]

    run = import_("--tokens", str(tmp_path / "more.jsonl"))
    step = SyncRun.objects.get(pk=run["id"]).step_records.get(name="tokens")
    assert step.created == 1 and step.invalid_samples == [{"key": None, "reason": "line 2: not JSON (JSONDecodeError)"}]


@pytest.mark.parametrize("name, content, words", [
    ("users.csv", b"\x89PNG\r\n\x1a\n\x00\x00binary", "not UTF-8 text"),
    ("users.csv", b"name,email\nAda,ada@example.org\n", "no id and no primaryEmail column, so not a GAM users export"),
    ("users.jsonl", b"<html>not json</html>\n", "is not JSON: not a JSON lines export"),
    ("users.csv.gz", b"not gzip at all", "cannot be read"),
])
def test_a_file_that_is_not_an_export_is_refused_in_one_line_before_a_run_and_by_the_step(tmp_path, tenant, name, content, words):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(CommandError) as refused:
        call_command("import", "acme", "--users", str(tmp_path / name), stdout=StringIO(), stderr=StringIO())
    assert words in str(refused.value) and "--users" in str(refused.value) and "\n" not in str(refused.value)
    assert not SyncRun.objects.exists()
    # A file that changed after it was checked fails the step, in the same line.
    provider = file_provider.FileProvider({"users": str(tmp_path / name)})
    with pytest.raises(ProviderError) as failed:
        list(provider.user_pages())
    assert words in str(failed.value) and "\n" not in str(failed.value)


def test_complete_marks_what_the_export_lacks_deleted_and_without_it_nothing_is(tmp_path, tenant):
    users, tokens = demo_org(40, apps=5)
    users_file, tokens_file = export(tmp_path, users, tokens)
    import_("--users", str(users_file), "--tokens", str(tokens_file), "--complete")
    gone_user = users[0]["id"]
    gone_token = next((u, t) for u, ts in tokens.items() if u != gone_user for t in ts)
    fewer_users = [u for u in users if u["id"] != gone_user]
    fewer_tokens = {u: [t for t in ts if (u, t["clientId"]) != (gone_token[0], gone_token[1]["clientId"])]
                    for u, ts in tokens.items() if u != gone_user}
    (tmp_path / "less").mkdir()
    less_users, less_tokens = export(tmp_path / "less", fewer_users, fewer_tokens)

    partial = import_("--users", str(less_users), "--tokens", str(less_tokens))
    assert partial["status"] == "completed"
    assert partial["steps"]["users"]["deactivated"] == partial["steps"]["tokens"]["deactivated"] == 0
    assert not DirectoryUser.objects.filter(deleted_at__isnull=False).exists()
    assert not Token.objects.filter(revoked_at__isnull=False).exists()

    whole = import_("--users", str(less_users), "--tokens", str(less_tokens), "--complete")
    assert whole["steps"]["users"]["deactivated"] == 1
    revoked = len(tokens[gone_user]) + 1  # the gone user's tokens, and the one taken away
    assert whole["steps"]["tokens"]["deactivated"] == revoked
    assert DirectoryUser.objects.get(external_id=gone_user).deleted_at is not None
    assert Token.objects.filter(revoked_at__isnull=False).count() == revoked
    assert UserAppRelation.objects.filter(active=False).count() == revoked


def test_tokens_of_users_not_imported_make_placeholders_and_email_only_ones_are_invalid(tmp_path, tenant):
    users, tokens = demo_org(10, apps=3)
    _, tokens_file = export(tmp_path, users, tokens)
    with open(tmp_path / "by-email.jsonl", "w") as out:
        out.write(json.dumps({"user": "nobody@example.org", "clientId": "a.apps", "scopes": ["openid"]}) + "\n")
        out.write(json.dumps({"user": users[0]["primaryEmail"], "clientId": "b.apps", "scopes": ["openid"]}) + "\n")

    run = import_("--tokens", str(tokens_file))
    assert run["steps"]["tokens"]["created"] == len(pairs(tokens))
    placeholders = DirectoryUser.objects.filter(last_seen__isnull=True)
    assert placeholders.count() == len([u for u, ts in tokens.items() if ts])
    assert set(placeholders.values_list("primary_email", flat=True)) <= {u["primaryEmail"] for u in users}  # GAM's user column

    run = import_("--tokens", str(tmp_path / "by-email.jsonl"))
    step = SyncRun.objects.get(pk=run["id"]).step_records.get(name="tokens")
    assert step.created == 1  # the known email's token
    assert step.invalid == 1 and "nobody@example.org is not in the directory" in step.invalid_samples[0]["reason"]
    assert Token.objects.filter(user__external_id=users[0]["id"], application__client_id="b.apps").exists()


def test_a_stopped_import_resumes_from_its_byte_offset_and_line(tmp_path, tenant, monkeypatch, settings):
    settings.BALLAST_GOVERNOR = {"batch_size": 25}
    monkeypatch.setattr(file_provider, "PAGE_RECORDS", 40)
    users, tokens = demo_org(200, apps=8)
    users_file, tokens_file = export(tmp_path, users, tokens)
    real_pages = file_provider.FileProvider._pages

    def failing_on_the_fourth_page(self, kind, page_token):
        for number, page in enumerate(real_pages(self, kind, page_token)):
            if number == 3:
                raise ProviderError("scripted: the disk went away")
            yield page

    monkeypatch.setattr(file_provider.FileProvider, "_pages", failing_on_the_fourth_page)
    stopped = import_("--users", str(users_file), "--tokens", str(tokens_file))
    assert stopped["status"] == "failed"
    users_step = SyncRun.objects.get(pk=stopped["id"]).step_records.get(name="users")
    offset, line = map(int, users_step.checkpoint["page_token"].split(":"))
    assert users_step.checkpoint["done_in_page"] == 40 and line == 82 and offset > 0  # header + 2 pages + … read
    with open(users_file, "rb") as f:
        assert f.read()[offset - 1 : offset] == b"\n"  # a line's start
    monkeypatch.setattr(file_provider.FileProvider, "_pages", real_pages)

    resumed = import_("--users", str(users_file), "--tokens", str(tokens_file))
    assert resumed["status"] == "completed"
    step = SyncRun.objects.get(pk=resumed["id"]).step_records.get(name="users")
    assert step.resumed_from_id == users_step.pk
    assert users_step.created + step.created == 200 and DirectoryUser.objects.count() == 200
    assert set(Token.objects.values_list("user__external_id", "application__client_id")) == pairs(tokens)
    assert Token.objects.count() == len(pairs(tokens))


def test_bad_arguments_are_refused_naming_the_flag(tmp_path, tenant):
    with pytest.raises(CommandError, match="--users: give a users file, a tokens file, or both"):
        call_command("import", "acme", stdout=StringIO())
    with pytest.raises(CommandError, match="--tokens: .*nope.csv: no such file"):
        call_command("import", "acme", "--tokens", str(tmp_path / "nope.csv"), stdout=StringIO())
    (tmp_path / "users.txt").write_text("x")
    with pytest.raises(CommandError, match="--users: users.txt: cannot tell the format from the name"):
        call_command("import", "acme", "--users", str(tmp_path / "users.txt"), stdout=StringIO())
    assert not SyncRun.objects.exists()


@pytest.mark.parametrize("big", [False, True], ids=["held-in-memory", "streamed-to-disk"])
def test_the_admin_imports_uploaded_files_and_removes_them_when_the_run_ends(tmp_path, tenant, admin_client, settings, big):
    from django.urls import reverse

    from syncapp.tasks import run_in_process

    settings.BALLAST_IMPORT_DIR = tmp_path / "uploads"
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 1 if big else 10 * 2**20  # 1 byte: every upload goes to a temporary file
    users, tokens = demo_org(30, apps=4)
    users_file, tokens_file = export(tmp_path, users, tokens, gz=True)
    url = reverse("admin:syncapp_tenant_import_files", args=[tenant.pk])
    assert "Import files" in admin_client.get(reverse("admin:syncapp_tenant_change", args=[tenant.pk])).content.decode()
    with open(users_file, "rb") as u, open(tokens_file, "rb") as t:
        response = admin_client.post(url, {"users": u, "tokens": t, "complete": "on"})
    assert response.status_code == 302
    run = SyncRun.objects.get()
    assert run.trigger == "import" and run.source["complete"] is True and run.source["uploaded"] is True
    kept = [Path(run.source["users"]), Path(run.source["tokens"])]
    assert all(p.parent == settings.BALLAST_IMPORT_DIR and p.name.endswith(".csv.gz") for p in kept)

    run_in_process(run.pk)  # what the cluster does with it
    run.refresh_from_db()
    assert run.status == Status.COMPLETED
    assert DirectoryUser.objects.count() == 30 and Token.objects.count() == len(pairs(tokens))
    assert not any(p.exists() for p in kept)  # the uploads went with the run's end


def test_the_admin_refuses_an_import_without_files_or_with_a_nameless_format(tmp_path, tenant, admin_client, settings):
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.urls import reverse

    settings.BALLAST_IMPORT_DIR = tmp_path / "uploads"
    url = reverse("admin:syncapp_tenant_import_files", args=[tenant.pk])
    page = admin_client.post(url, {}).content.decode()
    assert "Choose a users file, a tokens file, or both." in page
    page = admin_client.post(url, {"users": SimpleUploadedFile("export.txt", b"primaryEmail,id\n")}).content.decode()
    assert "cannot tell the format from the name" in page
    assert not SyncRun.objects.exists() and not list(settings.BALLAST_IMPORT_DIR.iterdir())  # nothing kept


def test_an_import_runs_page_says_which_files_it_read(tmp_path, tenant, admin_client):
    from django.urls import reverse

    users, tokens = demo_org(5, apps=2)
    users_file, _ = export(tmp_path, users, tokens)
    run = import_("--users", str(users_file))
    page = admin_client.get(reverse("admin:syncapp_syncrun_change", args=[run["id"]])).content.decode()
    assert "files users.csv (part of the directory: nothing is marked deleted)" in page


# What GAM really writes, and what a first real import got wrong (issue 21).

def _without_suspended(users: list[dict], tokens: dict) -> dict:
    """What `gam all users print tokens` lists: the tokens of users who are not suspended."""
    suspended = {u["id"] for u in users if u.get("suspended")}
    return {u: ts for u, ts in tokens.items() if u not in suspended}


def test_a_whole_tokens_file_that_leaves_out_suspended_users_is_refused_and_revokes_nothing(tmp_path, tenant):
    users, tokens = demo_org(120, apps=6)
    suspended_holders = sorted(u["primaryEmail"] for u in users if u.get("suspended") and tokens[u["id"]])
    assert suspended_holders, "the demo organisation has suspended users who hold tokens"
    users_file, tokens_file = export(tmp_path, users, tokens)
    assert import_("--users", str(users_file), "--tokens", str(tokens_file), "--complete")["status"] == "completed"
    active = Token.objects.filter(revoked_at__isnull=True).count()

    (tmp_path / "ns").mkdir()
    _, ns_only = export(tmp_path / "ns", users, _without_suspended(users, tokens))  # `gam all users print tokens`
    refused = import_("--users", str(users_file), "--tokens", str(ns_only), "--complete")
    step = SyncRun.objects.get(pk=refused["id"]).step_records.get(name="tokens")
    assert refused["status"] == "failed" and step.status == Status.FAILED
    assert f"lists none of the {len(suspended_holders)} suspended users who hold tokens ({', '.join(suspended_holders[:5])}" in step.error
    assert "`gam all users_ns_susp print tokens`" in step.error and "\n" not in step.error
    assert Token.objects.filter(revoked_at__isnull=True).count() == active  # nothing revoked
    assert step.created == step.updated == step.unchanged == 0  # nor written

    # The same file without --complete says nothing is gone: it is imported.
    assert import_("--tokens", str(ns_only))["status"] == "completed"
    assert Token.objects.filter(revoked_at__isnull=True).count() == active

    # A file that covers every user (`gam all users_ns_susp print tokens`) is whole: what it lacks is revoked.
    holder = next(u for u in users if u.get("suspended") and tokens[u["id"]])
    fewer = {u: ts[1:] if u == holder["id"] else ts for u, ts in tokens.items()}
    (tmp_path / "all").mkdir()
    _, all_users = export(tmp_path / "all", users, fewer)
    whole = import_("--users", str(users_file), "--tokens", str(all_users), "--complete")
    assert whole["status"] == "completed" and whole["steps"]["tokens"]["deactivated"] == 1
    gone = Token.objects.get(revoked_at__isnull=False)
    assert (gone.user.external_id, gone.application.client_id) == (holder["id"], tokens[holder["id"]][0]["clientId"])


def test_a_user_line_without_tokens_names_the_user_for_a_whole_file(tmp_path, tenant):
    """GAM's csv_output_users_audit writes a line with the user alone for a user without tokens:
    it is not a token, and it shows the file covers that user."""
    users, tokens = demo_org(60, apps=4)
    users_file, tokens_file = export(tmp_path, users, tokens)
    import_("--users", str(users_file), "--tokens", str(tokens_file), "--complete")
    suspended = [u for u in users if u.get("suspended")]
    rows = list(gam_token_rows(users, {u: ts for u, ts in tokens.items() if u not in {s["id"] for s in suspended}}))
    rows += [{"user": s["primaryEmail"]} for s in suspended]  # every suspended user's tokens are gone
    audit = write_csv(tmp_path / "audit.csv", TOKEN_COLUMNS, rows)

    run = import_("--tokens", str(audit), "--complete")
    assert run["status"] == "completed", run
    revoked = sum(len(tokens[s["id"]]) for s in suspended)
    assert revoked and run["steps"]["tokens"]["deactivated"] == revoked
    assert run["steps"]["tokens"]["invalid"] == 0
    assert not Token.objects.filter(revoked_at__isnull=True, user__is_suspended=True).exists()
    assert not Token.objects.filter(application__client_id="").exists()


def test_gams_default_users_export_is_refused_once_naming_the_columns_and_the_command(tmp_path, tenant):
    users, _ = demo_org(500, apps=2)
    plain = write_csv(tmp_path / "users.csv", ["primaryEmail"], ({"primaryEmail": u["primaryEmail"]} for u in users))  # `gam print users`
    with pytest.raises(CommandError) as refused:
        call_command("import", "acme", "--users", str(plain), stdout=StringIO(), stderr=StringIO())
    message = str(refused.value)
    assert message.startswith("--users: users.csv: no id column") and "\n" not in message
    assert ("`gam print users fields id,primaryemail,name,isadmin,isdelegatedadmin,suspended,archived,"
            "orgunitpath,creationtime,lastlogintime`") in message
    assert not SyncRun.objects.exists() and not DirectoryUser.objects.exists()


def test_a_column_the_file_lacks_keeps_what_is_stored_and_a_whole_file_must_have_it(tmp_path, tenant):
    users, tokens = demo_org(50, apps=5)
    users_file, tokens_file = export(tmp_path, users, tokens)
    import_("--users", str(users_file), "--tokens", str(tokens_file))
    stored = {(t.user.external_id, t.application.client_id): (t.scopes, t.native_app, t.anonymous, t.application.native_app)
              for t in Token.objects.select_related("user", "application")}
    assert any(scopes for scopes, *_ in stored.values()) and any(native for _, native, *_ in stored.values())
    logins = dict(DirectoryUser.objects.values_list("external_id", "last_login_at"))

    # GAM's wiki recipe: `gam all users print tokens fields user,clientid,displaytext`.
    short = [{"user": r["user"], "clientId": r["clientId"], "displayText": r["displayText"] + " (renamed)"} for r in gam_token_rows(users, tokens)]
    names_only = write_csv(tmp_path / "names.csv", ["user", "clientId", "displayText"], short)
    # And a users file without login times.
    fewer_columns = [c for c in USER_COLUMNS if c != "lastLoginTime"]
    user_rows = [{c: r[c] for c in fewer_columns} | {"name.fullName": "Renamed"} for r in gam_user_rows(users)]
    no_logins = write_csv(tmp_path / "no-logins.csv", fewer_columns, user_rows)

    run = import_("--users", str(no_logins), "--tokens", str(names_only))
    assert run["status"] == "completed", run
    assert run["steps"]["users"]["updated"] == 50 and run["steps"]["tokens"]["unchanged"] == len(stored)
    after = {(t.user.external_id, t.application.client_id): (t.scopes, t.native_app, t.anonymous, t.application.native_app)
             for t in Token.objects.select_related("user", "application")}
    assert after == stored  # scopes and flags kept
    assert set(Application.objects.values_list("display_name", flat=True)) == {r["displayText"] for r in short}
    assert dict(DirectoryUser.objects.values_list("external_id", "last_login_at")) == logins
    assert set(DirectoryUser.objects.values_list("full_name", flat=True)) == {"Renamed"}

    # A whole export must say every field, or it could not say what is gone from it.
    with pytest.raises(CommandError) as refused:
        call_command("import", "acme", "--tokens", str(names_only), "--complete", stdout=StringIO(), stderr=StringIO())
    assert "--tokens: names.csv: a whole export (--complete) needs every column Ballast reads, and it lacks anonymous, nativeApp, scopes" in str(refused.value)
    with pytest.raises(CommandError, match="--users: no-logins.csv: .* it lacks lastLoginTime"):
        call_command("import", "acme", "--users", str(no_logins), "--complete", stdout=StringIO(), stderr=StringIO())


def test_archived_users_and_delegated_admins_are_kept_from_a_gam_file(tmp_path, tenant):
    users, tokens = demo_org(300, apps=3)
    archived = {u["id"] for u in users if u.get("archived")}
    delegated = {u["id"] for u in users if u.get("isDelegatedAdmin")}
    assert archived and delegated and not delegated & {u["id"] for u in users if u.get("isAdmin")}
    users_file, _ = export(tmp_path, users, tokens)
    assert import_("--users", str(users_file))["status"] == "completed"
    assert set(DirectoryUser.objects.filter(is_archived=True).values_list("external_id", flat=True)) == archived
    assert set(DirectoryUser.objects.filter(is_delegated_admin=True).values_list("external_id", flat=True)) == delegated
    assert not DirectoryUser.objects.filter(is_delegated_admin=True, is_admin=True).exists()


@pytest.mark.parametrize("format, gz", [("csv", False), ("csv", True), ("jsonl", True)])
def test_an_imports_progress_counts_what_the_files_hold_not_what_is_stored(tmp_path, tenant, format, gz, settings):
    """A tenant of 200 stored users imports a file of 4: its users step expects 4 and ends at 4 of 4."""
    settings.BALLAST_FILE_CHUNK_BYTES = 4096
    from django.utils import timezone

    DirectoryUser.objects.bulk_create([DirectoryUser(tenant=tenant, external_id=f"stored-{n}", primary_email=f"s{n}@example.org",
                                                     first_seen=timezone.now()) for n in range(200)])
    users, tokens = demo_org(4, apps=3)
    users_file, tokens_file = export(tmp_path, users, tokens, format=format, gz=gz)
    assert file_provider.FileProvider({"users": str(users_file)}).user_count() == 4
    run = import_("--users", str(users_file), "--tokens", str(tokens_file))
    assert run["status"] == "completed", run
    step = SyncRun.objects.get(pk=run["id"]).step_records.get(name="users")
    assert (step.done, step.expected) == (4, 4)
