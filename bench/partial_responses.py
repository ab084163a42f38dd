"""Bytes and client CPU per Google call, before and after partial responses and gzip (issue 21.5),
side by side in interleaved rounds of one run:

    .venv/bin/python bench/partial_responses.py [--users 2000] [--activities 10000] [--rounds 3]

"before" asks as Ballast did: every field, and a User-Agent without "(gzip)" (Google then sends
the answer uncompressed, whatever Accept-Encoding says). "after" asks as it does now: `fields=`
(USER_FIELDS, TOKEN_FIELDS, ACTIVITY_FIELDS) and the User-Agent "ballast-directory-sync (gzip)".
Each case reads users.list page by page, tokens.list for every user, and the Reports API's token
feed page by page, through the Google provider's own client, and parses each record as the steps
do. The server (in its own process) answers as Google does: realistic records of every field,
a feed that is mostly "activity" events; bytes are those it sent (the body, after gzip).
CPU is this process's (time.process_time()) per call.
"""

import argparse
import time
from datetime import datetime, timezone

from common import directory_in_child  # noqa: I001 (sets Django up first)
from syncapp.providers import google, http
from syncapp.providers.google import ACTIVITY_PATH, USERS_PATH, GoogleProvider
from syncapp.records import parse_token, parse_user
from syncapp.steps.changes import parse_activity

API_CALLS = ("users.list", "tokens.list", "activities.list")
CASES = {
    "before": {"user_agent": "ballast-directory-sync", "fields": {}},
    "after": {"user_agent": http.USER_AGENT,
              "fields": {"users.list": google.USER_FIELDS, "tokens.list": google.TOKEN_FIELDS, "activities.list": google.ACTIVITY_FIELDS}},
}


def api_of(path: str) -> str:
    if path.startswith(ACTIVITY_PATH):
        return "activities.list"
    return "tokens.list" if path.endswith("/tokens") else "users.list"


def read_everything(url: str, case: dict) -> dict[str, float]:
    """CPU seconds per API, reading and parsing all of it as the steps would."""
    provider = GoogleProvider({"base_url": url, "access_token": "static-test-token"})
    provider._http.headers["User-Agent"] = case["user_agent"]
    fields = case["fields"]

    def asked(api: str) -> dict:
        return {"fields": fields[api]} if api in fields else {}

    cpu = {}
    started = time.process_time()
    keys = []
    for page in provider._pages("users.list", USERS_PATH, {"customer": "my_customer", "maxResults": 500, **asked("users.list")}, "users", None):
        keys += [parse_user(user)["external_id"] for user in page.records]
    cpu["users.list"] = time.process_time() - started

    started = time.process_time()
    for key in keys:
        for token in provider._get(f"{url}{USERS_PATH}/{key}/tokens", asked("tokens.list"), label="tokens").get("items") or []:
            parse_token(token)
    cpu["tokens.list"] = time.process_time() - started

    started = time.process_time()
    params = {"startTime": "2026-10-01T00:00:00.000Z", "maxResults": 1000, **asked("activities.list")}
    for page in provider._pages("activities.list", ACTIVITY_PATH, params, "items", None):
        for item in page.records:
            parse_activity(item)
    cpu["activities.list"] = time.process_time() - started
    provider.close()
    return cpu


def measure(case: dict, users: int, activities: int) -> dict[str, tuple[float, float]]:
    """API → (bytes per call, CPU ms per call) against a fresh server."""
    with directory_in_child(users, latency_s=0.0, activities=activities) as (url, counts):
        cpu = read_everything(url, case)
    calls = {api: [size for path, size in counts["sent"] if api_of(path) == api] for api in API_CALLS}
    return {api: (sum(calls[api]) / len(calls[api]), 1000 * cpu[api] / len(calls[api])) for api in API_CALLS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--activities", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results = {name: [] for name in CASES}
    for _ in range(args.rounds):
        for name, case in CASES.items():
            results[name].append(measure(case, args.users, args.activities))
    print(f"{args.users:,} users, {args.activities:,} feed events, server in its own process, {args.rounds} rounds interleaved "
          f"({datetime.now(timezone.utc):%Y-%m-%d})")
    print(f"{'call':<17}{'bytes/call before':>19}{'after':>10}{'ratio':>8}{'CPU ms/call before':>21}{'after':>8}{'ratio':>8}")
    for api in API_CALLS:
        mean = {name: [sum(r[api][i] for r in rounds) / len(rounds) for i in (0, 1)] for name, rounds in results.items()}
        (bytes_before, cpu_before), (bytes_after, cpu_after) = mean["before"], mean["after"]
        print(f"{api:<17}{bytes_before:>19,.0f}{bytes_after:>10,.0f}{bytes_after / bytes_before:>8.3f}"
              f"{cpu_before:>21.3f}{cpu_after:>8.3f}{cpu_after / cpu_before:>8.2f}")


if __name__ == "__main__":
    main()
