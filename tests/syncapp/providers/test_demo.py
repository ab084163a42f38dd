from collections import Counter

import pytest

from syncapp.providers import ConfigError
from syncapp.providers.demo import DemoProvider
from syncapp.records import parse_token, parse_user

from ...conftest import demo_org


def test_the_organisation_is_deterministic_and_paged():
    first, again = demo_org(1200, seed=3), demo_org(1200, seed=3)
    assert first == again
    assert demo_org(50, seed=4)[0] != demo_org(50, seed=3)[0]
    pages = list(DemoProvider({"users": 1200}).user_pages())
    assert [len(p.records) for p in pages] == [500, 500, 200]
    assert [p.token for p in pages] == [None, "500", "1000"]
    resumed = list(DemoProvider({"users": 1200}).user_pages("1000"))
    assert resumed[0].records == pages[2].records


def test_the_data_is_realistic_and_valid():
    users, tokens = demo_org(2000)
    parsed = [parse_user(u) for u in users]
    assert any(not name.isascii() for name in (u["full_name"] for u in parsed))
    assert 30 < sum(u["is_suspended"] for u in parsed) < 150
    assert 10 < sum(u["is_admin"] for u in parsed) < 80
    assert 200 < sum(1 for t in tokens.values() if not t) < 700  # people who granted nothing
    popularity = Counter(parse_token(t)["client_id"] for ts in tokens.values() for t in ts)
    ranked = [n for _, n in popularity.most_common()]
    assert ranked[0] > 10 * ranked[-1]  # skewed: a few apps everywhere, most rare
    assert 5000 < sum(ranked) < 6500


def test_latency_is_a_real_wait(monkeypatch):
    waits = []
    monkeypatch.setattr("syncapp.providers.demo.time.sleep", waits.append)
    provider = DemoProvider({"users": 3, "latency_ms": 25})
    list(provider.user_pages())
    provider.user_tokens(provider._user_id(0))
    assert waits == [0.025, 0.025]


@pytest.mark.parametrize("config", [{"users": -1}, {"apps": 0}, {"latency_ms": "fast"}, {"seed": True}])
def test_bad_config_is_refused(config):
    with pytest.raises(ConfigError):
        DemoProvider(config)
