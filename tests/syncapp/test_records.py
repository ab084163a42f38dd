import pytest

from syncapp.records import InvalidRecord, parse_token, parse_user

GOOD_USER = {
    "id": "123",
    "primaryEmail": "zoe@example.org",
    "name": {"fullName": "Zoë Ørsted"},
    "isAdmin": True,
    "suspended": False,
    "orgUnitPath": "/Engineering",
    "lastLoginTime": "1970-01-01T00:00:00.000Z",
    "creationTime": "2021-03-04T05:06:07.000Z",
}


def test_a_good_user_becomes_our_fields():
    user = parse_user(GOOD_USER)
    assert user["full_name"] == "Zoë Ørsted" and user["is_admin"] and not user["is_suspended"]
    assert user["last_login_at"] is None  # Google's "never"
    assert user["created_at_source"].isoformat() == "2021-03-04T05:06:07+00:00"


@pytest.mark.parametrize(
    "change, reason, key",
    [
        ({"id": None}, "missing id", None),
        ({"id": 42}, "id is not text", None),
        ({"primaryEmail": None}, "missing primaryEmail", "123"),
        ({"primaryEmail": "nobody"}, "primaryEmail has no @", "123"),
        ({"name": {"fullName": "a\x00b"}}, "name.fullName contains a NUL byte", "123"),
        ({"orgUnitPath": "/" * 256}, "orgUnitPath longer than 255 characters", "123"),
        ({"suspended": "no"}, "suspended is not true or false", "123"),
        ({"creationTime": "yesterday"}, "creationTime is not a timestamp", "123"),
        ({"creationTime": "2021-03-04T05:06:07"}, "creationTime has no time zone", "123"),
        ({"id": "x" * 65}, "id longer than 64 characters", None),
    ],
)
def test_bad_users_name_their_problem(change, reason, key):
    with pytest.raises(InvalidRecord) as info:
        parse_user({**GOOD_USER, **change})
    assert (info.value.reason, info.value.key) == (reason, key)


def test_tokens_are_validated_and_scopes_normalised():
    assert parse_token({"clientId": "a.apps", "scopes": ["b", "a", "b"], "nativeApp": True}) == {
        "client_id": "a.apps", "display_name": "", "native_app": True, "anonymous": False, "scopes": ["a", "b"],
    }
    for bad, reason in [
        ({"displayText": "x"}, "missing clientId"),
        ({"clientId": "a", "scopes": "openid"}, "scopes is not a list of text"),
        ({"clientId": "a", "anonymous": 1}, "anonymous is not true or false"),
        ("not a dict", "record is not an object"),
    ]:
        with pytest.raises(InvalidRecord, match=reason):
            parse_token(bad)
