"""The record parsers against any JSON a provider or an export may hand them: a record is either
refused (InvalidRecord, counted and skipped) or fit to store, on either database, as it is."""

import json
from datetime import timezone

import pytest
from django.db import transaction
from django.utils import timezone as django_timezone
from hypothesis import given
from hypothesis import strategies as st

from syncapp.models import Application, DirectoryUser
from syncapp.records import InvalidRecord, parse_listed_token, parse_token, parse_user
from syncapp.steps.changes import parse_activity

from ..factories import TenantFactory

pytestmark = pytest.mark.django_db

# What JSON may carry: lone surrogates ("\ud800" is valid JSON), NULs, controls, huge numbers.
json_text = st.one_of(st.text(max_size=30), st.text(st.characters(codec=None), max_size=5), st.sampled_from(["", "\x00", "\ud800", "a\udfffb"]))
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), json_text),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(json_text, inner, max_size=3), max_leaves=8,
)
timestamps = st.one_of(
    json_values,
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.sampled_from(["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "1970-01-01T00:00:00Z", "2026-12-07T10:00:00Z"]),
)
users = st.fixed_dictionaries({}, optional={
    "id": json_values | json_text, "primaryEmail": json_values | json_text.map(lambda t: t + "@example.org"),
    "name": json_values | st.fixed_dictionaries({"fullName": json_values | json_text}),
    "isAdmin": json_values, "suspended": json_values, "archived": json_values, "orgUnitPath": json_values | json_text,
    "lastLoginTime": timestamps, "creationTime": timestamps,
})
tokens = st.fixed_dictionaries({}, optional={
    "clientId": json_values | json_text, "displayText": json_values | json_text, "scopes": json_values | st.lists(json_text, max_size=4),
    "nativeApp": json_values, "anonymous": json_values, "userKey": json_values | json_text, "user": json_values | json_text,
    "orgScopes": json_values, "tokenless": json_values,
})


activities = st.fixed_dictionaries({"id": st.fixed_dictionaries({}, optional={"time": timestamps, "uniqueQualifier": json_values | json_text}) | json_values}, optional={
    "actor": st.fixed_dictionaries({}, optional={"email": json_values | json_text, "profileId": json_values | json_text}) | json_values,
    "events": st.lists(st.fixed_dictionaries({"name": st.sampled_from(["authorize", "revoke", "activity", "other"]) | json_values}, optional={
        "parameters": st.lists(st.fixed_dictionaries({"name": st.sampled_from(["client_id", "scope", "app_name", "client_type"]) | json_text},
                                                     optional={"value": json_values | json_text, "multiValue": json_values}), max_size=4),
    }), max_size=3) | json_values,
})


def storable(text: str, limit: int) -> bool:
    return isinstance(text, str) and len(text) <= limit and "\x00" not in text and text.encode("utf-8", "strict") is not None


def parsed(parse, record):
    try:
        return parse(record)
    except InvalidRecord as refused:
        assert refused.reason and "\n" not in refused.reason
        return None


@pytest.fixture
def tenant():
    return TenantFactory()


@given(record=users | json_values)
def test_any_user_record_is_refused_or_stored_as_it_is(tenant, record):
    fields = parsed(parse_user, record)
    if fields is None:
        return
    assert storable(fields["external_id"], 64) and storable(fields["primary_email"], 254) and storable(fields["full_name"], 200)
    for name in ("last_login_at", "created_at_source"):
        assert fields[name] is None or fields[name].astimezone(timezone.utc).tzinfo is timezone.utc  # every database can hold it
    with transaction.atomic():
        stored = DirectoryUser.objects.create(tenant=tenant, first_seen=django_timezone.now(), **fields)
        again = DirectoryUser.objects.get(pk=stored.pk)
        assert (again.external_id, again.primary_email, again.full_name, again.org_unit) == (
            fields["external_id"], fields["primary_email"], fields["full_name"], fields["org_unit"])
        assert again.created_at_source == fields["created_at_source"] and again.last_login_at == fields["last_login_at"]
        transaction.set_rollback(True)


@given(record=tokens | json_values)
def test_any_token_record_is_refused_or_stored_as_it_is(tenant, record):
    for parse in (parse_token, parse_listed_token):
        fields = parsed(parse, record)
        if fields is None:
            continue
        assert all(storable(scope, 10_000) for scope in fields["scopes"])
        with transaction.atomic():
            now = django_timezone.now()
            stored = Application.objects.create(tenant=tenant, client_id=fields["client_id"], display_name=fields["display_name"],
                                                native_app=fields["native_app"], org_scopes=fields["scopes"], first_seen=now, last_seen=now)
            again = Application.objects.get(pk=stored.pk)
            assert (again.client_id, again.display_name, again.org_scopes) == (fields["client_id"], fields["display_name"], fields["scopes"])
            transaction.set_rollback(True)


@given(item=activities | json_values)
def test_any_token_activity_is_refused_or_gives_changes_a_database_takes(item):
    result = parsed(parse_activity, item)
    if result is None:
        return
    time, changes = result
    assert time.astimezone(timezone.utc)
    for change in changes:
        assert storable(change.client_id, 255) and storable(change.app_name, 255) and storable(change.client_type, 40)
        assert all(storable(text, 254) for text in (change.qualifier, change.email or "", change.user_id or ""))
        assert all(storable(scope, 10_000) for scope in change.scopes)


def test_json_text_reaches_the_parsers_as_python_reads_it():
    """The strategies above stand for what json.loads gives: a lone surrogate comes through."""
    assert json.loads('"\\ud800"') == "\ud800"


# --- Findings: each failed before this suite, and is fixed ---------------------------------------

@pytest.mark.parametrize("parse, record, reason", [
    (parse_user, {"id": "\ud800", "primaryEmail": "a@example.org"}, "id is not Unicode text (a lone surrogate)"),
    (parse_user, {"id": "1", "primaryEmail": "a\udfff@example.org"}, "primaryEmail is not Unicode text (a lone surrogate)"),
    (parse_user, {"id": "1", "primaryEmail": "a@example.org", "name": {"fullName": "\ud83d"}}, "name.fullName is not Unicode text (a lone surrogate)"),
    (parse_token, {"clientId": "\ud800.apps"}, "clientId is not Unicode text (a lone surrogate)"),
    (parse_token, {"clientId": "a.apps", "displayText": "\udc00"}, "displayText is not Unicode text (a lone surrogate)"),
    (parse_token, {"clientId": "a.apps", "scopes": ["openid", "\ud800"]}, "scopes is not a list of text"),
    (parse_listed_token, {"clientId": "a.apps", "userKey": "\ud800"}, "userKey is not Unicode text (a lone surrogate)"),
    (parse_user, {"id": "1", "primaryEmail": "a@example.org", "creationTime": "0001-01-01T00:00:00+01:00"}, "creationTime is out of range"),
    (parse_activity, {"id": {"time": "2026-12-07T10:00:00Z", "uniqueQualifier": "1"}, "events": [
        {"name": "authorize", "parameters": [{"name": "client_id", "value": "a\x00.apps"}]}]}, "client_id contains a NUL byte"),
    (parse_activity, {"id": {"time": "2026-12-07T10:00:00Z", "uniqueQualifier": "1"}, "actor": {"email": "\ud800@example.org"}, "events": []},
     "actor.email is not Unicode text (a lone surrogate)"),
    (parse_activity, {"id": {"time": "2026-12-07T10:00:00Z", "uniqueQualifier": "1"}, "events": [
        {"name": "authorize", "parameters": [{"name": "client_id", "value": "a.apps"}, {"name": "scope", "multiValue": ["\x00"]}]}]},
     "scope is not a list of text"),
    (parse_activity, {"id": {"time": "2026-12-07T10:00:00Z", "uniqueQualifier": "1"}, "events": True}, "events is not a list"),  # was a TypeError
    (parse_activity, {"id": {"time": "2026-12-07T10:00:00Z", "uniqueQualifier": "1"}, "events": [{"name": "authorize", "parameters": 7}]},
     "parameters is not a list"),
    (parse_user, {"id": "1", "primaryEmail": "a@example.org", "lastLoginTime": "9999-12-31T23:59:59-01:00"}, "lastLoginTime is out of range"),
])
def test_text_no_database_takes_and_times_it_cannot_hold_make_a_record_invalid(parse, record, reason):
    """Finding: a lone surrogate (valid JSON: "\\ud800") and a time outside what UTC can say
    passed the parsers, and failed the whole batch at the database."""
    with pytest.raises(InvalidRecord) as refused:
        parse(record)
    assert refused.value.reason == reason
    assert refused.value.key is None or refused.value.key.encode("utf-8")  # a sample's key is stored as JSON


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("batches_as_the_governor_sizes_them")
def test_an_export_with_a_lone_surrogate_imports_the_rest_and_counts_it(tmp_path):
    from .test_export_files import import_

    TenantFactory(slug="acme", provider="google", provider_config={"access_token": "x"})
    path = tmp_path / "users.jsonl"
    path.write_text('{"id": "1", "primaryEmail": "a@example.org"}\n{"id": "2", "primaryEmail": "b@example.org", "name": {"fullName": "\\ud800"}}\n'
                    '{"id": "3", "primaryEmail": "c@example.org", "creationTime": "0001-01-01T00:00:00+01:00"}\n{"id": "4", "primaryEmail": "d@example.org"}\n')
    run = import_("--users", str(path))
    assert run["status"] == "completed_with_errors"
    assert (run["steps"]["users"]["created"], run["steps"]["users"]["invalid"]) == (2, 2)
    assert sorted(DirectoryUser.objects.values_list("external_id", flat=True)) == ["1", "4"]
