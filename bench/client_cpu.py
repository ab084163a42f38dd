"""Client CPU per provider call: Ballast's tokens step next to a bare 20-thread httpx client making
the same calls to the same server, in interleaved rounds of one run (issue 11: ratio ≤ 1.25):

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/ballast .venv/bin/python bench/client_cpu.py [--users 2000] [--rounds 3]

The server is Google's Directory API on loopback in a child process, answering each call after
20 ms, so the step is latency-bound and the client's CPU is what one core would spend per call.
CPU is this process's (every thread: the step's, the governor's sampler, the bare client's),
read with time.process_time() around each case; calls are those the server answered.

The bare clients read the user pages, then call tokens.list for every user from 20 threads and
parse the answers: one with httpx (the yardstick the issue set), one with urllib3 (what Ballast's
Google provider uses, so the difference from it is what Ballast's orchestration costs). Ballast does that and everything a sync adds: the governor's pacing, the
records' validation, placeholders for users the users step has not stored, and the tokens written.
"""

import argparse
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

from common import directory_in_child, fresh_tenant, timed_run  # noqa: I001 (sets Django up first)
import httpx
import urllib3
from django.conf import settings

THREADS = 20
AUTHORIZATION = {"Authorization": "Bearer static-test-token"}


def bare(get: Callable[[str, dict | None], dict]) -> None:
    """users.list page by page, then tokens.list for every user from THREADS threads."""
    keys, page_token = [], None
    while True:
        body = get("/admin/directory/v1/users", {"customer": "my_customer", "maxResults": 500, **({"pageToken": page_token} if page_token else {})})
        keys += [user["id"] for user in body.get("users", [])]
        if not (page_token := body.get("nextPageToken")):
            break
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        for _ in pool.map(lambda key: get(f"/admin/directory/v1/users/{quote(key, safe='@')}/tokens", None).get("items", []), keys):
            pass


def bare_httpx(url: str) -> float:
    cpu = time.process_time()
    with httpx.Client(base_url=url, limits=httpx.Limits(max_connections=THREADS, max_keepalive_connections=THREADS)) as client:
        bare(lambda path, params: client.get(path, params=params, headers=AUTHORIZATION).json())
    return time.process_time() - cpu


def bare_urllib3(url: str) -> float:
    cpu = time.process_time()
    http = urllib3.PoolManager(maxsize=THREADS, block=True)
    bare(lambda path, params: json.loads(http.request("GET", url + path, fields=params, headers=AUTHORIZATION).data))
    http.clear()
    return time.process_time() - cpu


def ballast(url: str) -> float:
    """The run alone: making the tenant before and deleting its rows after are not the client's."""
    tenant = fresh_tenant("bench-client-cpu", provider="google", provider_config={"base_url": url, "access_token": "static-test-token"})
    try:
        cpu = time.process_time()
        run, _ = timed_run(tenant, "tokens")
        cpu = time.process_time() - cpu
        assert run.status == "completed", (run.status, run.error)
    finally:
        tenant.delete()
    return cpu


def measure(case, users: int) -> tuple[float, float, int]:
    """(wall seconds, CPU ms per call, calls) of one case against a fresh server."""
    with directory_in_child(users, latency_s=0.02) as (url, counts):
        wall = time.perf_counter()
        cpu = case(url)
        wall = time.perf_counter() - wall
    return wall, 1000 * cpu / counts["calls"], counts["calls"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    settings.BALLAST_GOVERNOR = {}  # the default profile, as a sync runs
    cases = {"bare httpx, 20 threads": bare_httpx, "bare urllib3, 20 threads": bare_urllib3, "Ballast tokens step": ballast}
    results = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, case in cases.items():
            results[name].append(measure(case, args.users))
    print(f"{args.users:,} users, 20 ms per call, server in its own process, {args.rounds} rounds interleaved")
    print(f"{'client':<26}{'calls':>7}{'seconds, each round':>24}{'CPU ms/call, each round':>26}{'mean':>7}")
    means = {}
    for name, rounds in results.items():
        means[name] = sum(r[1] for r in rounds) / len(rounds)
        print(f"{name:<26}{rounds[-1][2]:>7,}{' '.join(f'{r[0]:.2f}' for r in rounds):>24}"
              f"{' '.join(f'{r[1]:.2f}' for r in rounds):>26}{means[name]:>7.2f}")
    ratio = means["Ballast tokens step"] / means["bare httpx, 20 threads"]
    print(f"Ballast / bare httpx: {ratio:.2f}× the CPU per call (goal ≤ 1.25×); "
          f"Ballast / bare urllib3 (its own HTTP client): {means['Ballast tokens step'] / means['bare urllib3, 20 threads']:.2f}×")


if __name__ == "__main__":
    main()
