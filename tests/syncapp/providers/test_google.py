import socket
from contextlib import contextmanager

import pytest

from monitoring.governor.call_limits import Call, Outcome
from syncapp.providers import ConfigError, ProviderError
from syncapp.providers.google import ACTIVITY_FIELDS, SCOPES, TOKEN_FIELDS, USER_FIELDS, GoogleProvider
from syncapp.records import parse_token, parse_user

from ...conftest import demo_org
from ...fakegoogle import USERS_PATH, google_error
from ...googleshapes import ACTIVITIES_LIST, TOKENS_LIST, USERS_LIST, check_fields, parse_fields


def make_users(n: int) -> list[dict]:
    return [{"id": str(1000 + i), "primaryEmail": f"u{i}@example.org"} for i in range(n)]


@pytest.fixture
def sleeps():
    return []


@pytest.fixture
def provider(fake_google, sleeps):
    p = GoogleProvider(
        {"base_url": fake_google.url, "access_token": "static-test-token", "retry_base_ms": 1, "max_attempts": 4},
        sleep=sleeps.append,
    )
    yield p
    p.close()


def test_users_are_paged_with_the_documented_query(fake_google, provider):
    fake_google.load(make_users(1200), {})
    pages = list(provider.user_pages())
    assert [len(p.records) for p in pages] == [500, 500, 200]
    assert [p.token for p in pages] == [None, "500", "1000"]
    assert [r["id"] for p in pages for r in p.records] == [str(1000 + i) for i in range(1200)]
    queries = [q for _, path, q in fake_google.requests if path == USERS_PATH]
    assert queries[0] == {"customer": "my_customer", "maxResults": "500", "fields": USER_FIELDS}
    assert queries[1] == {"customer": "my_customer", "maxResults": "500", "fields": USER_FIELDS, "pageToken": "500"}


def test_a_user_without_tokens_has_no_items_key(fake_google, provider):
    fake_google.load(make_users(2), {"1000": [{"clientId": "a.apps", "scopes": ["openid"]}]})
    assert provider.user_tokens("1000") == [{"clientId": "a.apps", "scopes": ["openid"], "anonymous": False, "nativeApp": False}]
    assert provider.user_tokens("1001") == []


def test_user_keys_are_escaped_in_the_path(fake_google, provider):
    fake_google.load(make_users(1), {"u0@example.org": [{"clientId": "a.apps"}]})
    assert [t["clientId"] for t in provider.user_tokens("u0@example.org")] == ["a.apps"]
    assert fake_google.paths(USERS_PATH + "/")[-1] == f"{USERS_PATH}/u0@example.org/tokens"


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_honoured(fake_google, provider, sleeps, status):
    fake_google.load(make_users(3), {})
    fake_google.fail_next(USERS_PATH, status, google_error(status, "slow down", "rateLimitExceeded"), {"Retry-After": "2"})
    pages = list(provider.user_pages())
    assert len(pages[0].records) == 3
    assert sleeps == [2.0]
    assert len(fake_google.paths(USERS_PATH)) == 2


@pytest.mark.parametrize("reason", ["userRateLimitExceeded", "rateLimitExceeded", "quotaExceeded"])
def test_403_rate_reasons_are_retried_with_backoff(fake_google, provider, sleeps, reason):
    fake_google.load(make_users(1), {"1000": []})
    fake_google.fail_next(USERS_PATH + "/", 403, google_error(403, "Quota exceeded", reason), times=2)
    assert provider.user_tokens("1000") == []
    assert len(sleeps) == 2 and all(0 < s < 1 for s in sleeps)  # 1 ms base, jittered


@pytest.mark.parametrize("persisting", [True, False])
def test_each_answer_tells_the_governor_what_it_was_and_a_lone_fault_is_retried_soon(fake_google, sleeps, persisting):
    fake_google.load(make_users(1), {"1000": []})
    seen = []

    @contextmanager
    def guard():
        call = Call()
        yield call
        call.persisting = persisting  # the governor's verdict on push-back
        seen.append(call.outcome)

    p = GoogleProvider({"base_url": fake_google.url, "access_token": "static-test-token"}, sleep=sleeps.append)
    p.guard = guard
    fake_google.fail_next(USERS_PATH + "/", 503)
    fake_google.fail_next(USERS_PATH + "/", 403, google_error(403, "Rate Limit Exceeded", "rateLimitExceeded"))
    assert p.user_tokens("1000") == []
    p.close()
    assert seen == [Outcome.ERROR, Outcome.PUSHBACK, Outcome.OK]
    assert 0.05 <= sleeps[0] <= 0.1  # a fault of that call: retried within a tenth of a second
    if persisting:
        assert 1.0 <= sleeps[1] <= 3.0  # push-back that persists: Google's backoff (2nd attempt: 2 s plus up to 1 s)
    else:
        assert 0.1 <= sleeps[1] <= 0.2  # a lone push-back: a fault of that call (2nd attempt: 100-200 ms)


def test_other_403_fails_at_once_with_the_apis_message(fake_google, provider, sleeps):
    fake_google.load(make_users(1), {})
    fake_google.fail_next(USERS_PATH, 403, google_error(403, "Not Authorized to access this resource/api", "forbidden"))
    with pytest.raises(ProviderError, match="403 Not Authorized to access this resource/api"):
        list(provider.user_pages())
    assert sleeps == []


def test_401_names_the_problem_without_the_token(fake_google, sleeps):
    fake_google.load(make_users(1), {})
    p = GoogleProvider({"base_url": fake_google.url, "access_token": "wrong-secret-token"}, sleep=sleeps.append)
    with pytest.raises(ProviderError) as info:
        list(p.user_pages())
    assert "401 Request had invalid authentication credentials." in str(info.value)
    assert "wrong-secret-token" not in str(info.value)
    assert sleeps == []


def test_404_on_tokens_fails_that_call(fake_google, provider):
    fake_google.load(make_users(1), {})
    with pytest.raises(ProviderError, match="404 Resource Not Found: userKey"):
        provider.user_tokens("999")


def test_persistent_5xx_gives_up_after_max_attempts(fake_google, provider, sleeps):
    fake_google.load(make_users(1), {})
    fake_google.fail_next(USERS_PATH, 500, times=10)
    with pytest.raises(ProviderError, match="gave up after 4 attempts: 500 scripted"):
        list(provider.user_pages())
    assert len(sleeps) == 3
    assert sleeps[0] < sleeps[2]  # exponential


def test_connection_errors_are_retried(sleeps):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nobody listens
    p = GoogleProvider({"base_url": f"http://127.0.0.1:{port}", "access_token": "t", "max_attempts": 3, "retry_base_ms": 1}, sleep=sleeps.append)
    with pytest.raises(ProviderError, match=rf"gave up after 3 attempts: connection error: nothing answers at http://127.0.0.1:{port} \(NewConnectionError\)$"):
        p.user_tokens("1")
    assert len(sleeps) == 2


def test_service_account_with_domain_wide_delegation(fake_google, credentials_dir, sleeps):
    credentials = fake_google.service_account_file(credentials_dir)
    fake_google.load(make_users(2), {"1000": [{"clientId": "a.apps"}]})
    p = GoogleProvider(
        {"base_url": fake_google.url, "credentials_file": str(credentials), "subject": "admin@example.org"},
        sleep=sleeps.append,
    )
    assert [len(page.records) for page in p.user_pages()] == [2]
    assert [t["clientId"] for t in p.user_tokens("1000")] == ["a.apps"]
    assert len(fake_google.assertions) == 1  # one token, reused while valid
    claims = fake_google.assertions[0]
    assert claims["sub"] == "admin@example.org"
    assert claims["iss"] == "sync@ballast-test.iam.gserviceaccount.com"
    assert set(claims["scope"].split()) == set(SCOPES)


def test_the_token_feed_is_paged_newest_first_from_a_start_time_with_a_token_of_its_own_scope(fake_google, credentials_dir, sleeps):
    from datetime import datetime, timedelta, timezone

    from syncapp.providers.google import REPORTS_SCOPE

    from ...fakegoogle import ACTIVITY_PATH

    credentials = fake_google.service_account_file(credentials_dir)
    fake_google.load(make_users(2), {})
    start = datetime(2026, 11, 24, 10, 0, tzinfo=timezone.utc)
    for n in range(2500):
        fake_google.grant("1000", {"clientId": f"app{n % 3}.apps", "scopes": ["openid"]}, start + timedelta(seconds=n))
    p = GoogleProvider({"base_url": fake_google.url, "credentials_file": str(credentials), "subject": "admin@example.org"}, sleep=sleeps.append)
    pages = list(p.token_changes(start + timedelta(seconds=500)))
    assert [len(page.records) for page in pages] == [1000, 1000]  # 2,000 since then, 1,000 a page
    times = [item["id"]["time"] for page in pages for item in page.records]
    assert times == sorted(times, reverse=True) and times[-1] == "2026-11-24T10:08:20.000Z"
    first = next(query for _, path, query in fake_google.requests if path == ACTIVITY_PATH)
    assert first == {"startTime": "2026-11-24T10:08:20.000Z", "maxResults": "1000", "fields": ACTIVITY_FIELDS}
    assert [claims["scope"] for claims in fake_google.assertions] == [REPORTS_SCOPE]  # the feed's own token, one scope
    fake_google.activities.clear()
    assert [page.records for page in p.token_changes(start)] == [[]]  # no "items" key: nothing happened


def test_answers_are_gzipped_partial_responses_with_every_field_the_records_read(fake_google, provider):
    """Google gzips only for a User-Agent that says "gzip", and sends only the `fields=` asked
    for (the fake refuses a field its Discovery schema lacks, as Google does): the records read
    the same as whole answers would, in a fraction of the bytes."""


    users, tokens = demo_org(300, apps=8)
    fake_google.load(users, tokens)
    with_tokens = next(u["id"] for u in users if tokens[u["id"]])
    partial_users = [user for page in provider.user_pages() for user in page.records]
    partial_tokens = provider.user_tokens(with_tokens)
    sent = [size for path, size in fake_google.sent if path.startswith(USERS_PATH)]

    whole = GoogleProvider({"base_url": fake_google.url, "access_token": "static-test-token"})
    whole._http.headers["User-Agent"] = "a client that does not say it"  # no gzip then
    fake_google.sent.clear()
    whole_users = [user for page in whole._pages("users.list", USERS_PATH, {"customer": "my_customer", "maxResults": 500}, "users", None)
                   for user in page.records]
    whole_tokens = whole._get(f"{fake_google.url}{USERS_PATH}/{with_tokens}/tokens", label="tokens")["items"]
    whole_sent = [size for path, size in fake_google.sent if path.startswith(USERS_PATH)]
    whole.close()

    assert "kind" in whole_users[0] and "etag" in whole_users[0] and "thumbnailPhotoUrl" in whole_users[0]
    assert set(partial_users[0]) <= set(parse_fields(USER_FIELDS)["users"]) and "etag" not in partial_users[0]
    assert [parse_user(u) for u in partial_users] == [parse_user(u) for u in whole_users]
    assert [parse_token(t) for t in partial_tokens] == [parse_token(t) for t in whole_tokens]
    assert sum(sent) * 5 < sum(whole_sent)  # a fifth of the bytes, at most


def test_a_field_googles_schema_lacks_is_refused_as_google_refuses_it(fake_google, provider):
    fake_google.load(make_users(2), {})
    with pytest.raises(ProviderError, match="400 Invalid field selection users/nickname"):
        provider._get(f"{fake_google.url}{USERS_PATH}", {"customer": "my_customer", "fields": "users(id,nickname)"}, label="users")
    for fields, schema in ((USER_FIELDS, USERS_LIST), (TOKEN_FIELDS, TOKENS_LIST), (ACTIVITY_FIELDS, ACTIVITIES_LIST)):
        check_fields(parse_fields(fields), schema)  # what Ballast asks for, Google's schema has


@pytest.mark.parametrize(
    "config, message",
    [
        ({}, "set access_token, or credentials_file and subject"),
        ({"credentials_file": "/x.json"}, "subject must be a non-empty string"),
        ({"access_token": "t", "base_url": "ftp://x"}, "base_url must start with http"),
        ({"access_token": "t", "max_attempts": 0}, "max_attempts must be a whole number >= 1"),
    ],
)
def test_bad_config_is_refused_with_the_key_named(config, message):
    with pytest.raises(ConfigError, match=message):
        GoogleProvider.clean_config(config)


@pytest.mark.parametrize("content", [b"not json", b"\xff\xfe", b"[1]", b'{"type": "service_account"}'])
def test_a_credentials_file_that_is_no_service_account_key_is_a_config_error(credentials_dir, content):
    (credentials_dir / "key.json").write_bytes(content)
    (credentials_dir / "key.json").chmod(0o600)
    with pytest.raises(ConfigError, match=r"^credentials_file cannot be used: \w+$"):
        GoogleProvider({"credentials_file": "key.json", "subject": "a@b.c"})
