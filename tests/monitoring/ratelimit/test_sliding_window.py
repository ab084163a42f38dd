"""Rate limits: the stores (one contract, two backends), the headers, the middleware, the load test."""

import socket
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import redis
from django.core.checks import run_checks
from django.test import RequestFactory

from monitoring.models import RateLimitDenial, TenantQuota
from monitoring.ratelimit.middleware import client_ip
from monitoring.ratelimit.sliding_window import CacheStore, RedisStore, Usage, headers
from syncapp.apikeys import create_key

from ...factories import TenantFactory

REDIS = "redis://127.0.0.1:6379/15"


def redis_up() -> bool:
    try:
        return redis.Redis.from_url(REDIS, socket_connect_timeout=0.5).ping()
    except redis.RedisError:
        return False


@pytest.fixture(params=["cache", "redis"])
def store(request, db):
    if request.param == "redis":
        if not redis_up():
            pytest.skip("no Redis on 127.0.0.1:6379")
        return RedisStore(REDIS)
    return CacheStore()


def test_the_window_holds_exactly_and_slides(store):
    key = f"test:{uuid.uuid4().hex}"
    results = [store.hit(key, 3, 60, now=1000.0 + i) for i in range(4)]
    assert [r.allowed for r in results] == [True, True, True, False]
    assert [r.remaining for r in results] == [2, 1, 0, 0]
    assert results[3].reset_after == pytest.approx(57.0)  # the first request leaves the window at 1060
    assert store.hit(key, 3, 60, now=1060.5).allowed  # it has left
    store.reset(key)
    assert store.hit(key, 3, 60, now=1061.0).remaining == 2


def test_exact_under_concurrency(store, transactional_db):
    key = f"test:{uuid.uuid4().hex}"
    with ThreadPoolExecutor(max_workers=30) as pool:
        results = list(pool.map(lambda i: store.hit(key, 20, 60, now=2000.0), range(60)))
    assert sum(r.allowed for r in results) == 20


def test_header_fields_follow_the_ietf_draft():
    assert headers(Usage(True, 60, 12, 29.2)) == {"RateLimit-Policy": '"default";q=60;w=60', "RateLimit": '"default";r=12;t=30'}
    refused = headers(Usage(False, 60, 0, 0.2))
    assert refused["Retry-After"] == "1" and refused["RateLimit"] == '"default";r=0;t=1'


def test_a_store_outage_fails_open_by_default_or_closed_when_set(settings, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"redis://127.0.0.1:{s.getsockname()[1]}/0"
    import monitoring.ratelimit.sliding_window as rl

    monkeypatch.setattr(rl, "_store", RedisStore(dead))
    assert rl.hit("tenant:1", 5) is None
    settings.BALLAST_RATELIMIT_FAIL_OPEN = False
    assert rl.hit("tenant:1", 5).allowed is False


@pytest.mark.parametrize("proxies, remote, forwarded, client", [
    ([], "10.0.0.5", "1.2.3.4", "10.0.0.5"),  # X-Forwarded-For ignored by default
    (["10.0.0.5"], "10.0.0.5", "1.2.3.4", "1.2.3.4"),
    (["10.0.0.0/8"], "10.0.0.5", "6.6.6.6, 1.2.3.4, 10.0.0.7", "1.2.3.4"),  # the nearest untrusted hop
    (["10.0.0.5"], "192.168.1.1", "1.2.3.4", "192.168.1.1"),  # not from the proxy: its header means nothing
])
def test_client_address_from_trusted_proxies_only(settings, proxies, remote, forwarded, client):
    settings.BALLAST_TRUSTED_PROXIES = proxies
    request = RequestFactory().get("/", REMOTE_ADDR=remote, HTTP_X_FORWARDED_FOR=forwarded)
    assert client_ip(request) == client


@pytest.mark.django_db
def test_responses_carry_the_fields_and_a_refusal_is_counted(client):
    tenant = TenantFactory()
    TenantQuota.objects.create(tenant=tenant, requests_per_minute=2, burst=0)
    _, key = create_key(tenant)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {key}"}
    first = client.get("/api/v1/runs/", **auth)
    assert first.status_code == 200 and first["RateLimit-Policy"] == '"default";q=2;w=60' and first["RateLimit"].startswith('"default";r=1;')
    client.get("/api/v1/runs/", **auth)
    refused = client.get("/api/v1/runs/", **auth)
    assert refused.status_code == 429 and int(refused["Retry-After"]) >= 1
    assert refused.json()["error"]["code"] == "rate_limited"
    assert RateLimitDenial.objects.get(tenant=tenant).count == 1
    assert "RateLimit" not in client.get("/admin/login/")  # exempt


@pytest.mark.django_db  # every system check runs, syncapp's reading of stored secrets among them
def test_a_process_local_cache_is_refused_by_a_system_check(settings):
    settings.REDIS_URL = None
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    errors = [e for e in run_checks() if e.id == "monitoring.E001"]
    assert errors and "is not a shared cache" in errors[0].msg


def test_exactly_the_limit_passes_under_load_and_another_tenant_is_unaffected(live_server):
    limited, other = TenantFactory(slug="limited"), TenantFactory(slug="other")
    TenantQuota.objects.create(tenant=limited, requests_per_minute=60, burst=0)
    TenantQuota.objects.create(tenant=other, requests_per_minute=1000)
    limited_key, other_key = create_key(limited)[1], create_key(other)[1]

    def call(key):
        with httpx.Client(base_url=live_server.url, timeout=60) as http:
            return http.get("/api/v1/runs/", headers={"Authorization": f"Bearer {key}"})

    with ThreadPoolExecutor(max_workers=120) as pool:
        answers = list(pool.map(call, [limited_key] * 100 + [other_key] * 20))
    mine, theirs = answers[:100], answers[100:]
    assert sorted(r.status_code for r in mine) == [200] * 60 + [429] * 40
    assert all(r.headers["Retry-After"] for r in mine if r.status_code == 429)
    assert all(r.status_code == 200 for r in theirs)
    assert RateLimitDenial.objects.get(tenant=limited).count == 40
