"""A changes run next to a full sync, in one run:

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/ballast .venv/bin/python bench/changes.py [--users 10000] [--provider microsoft]

google: the Directory and Reports APIs on loopback, served by a child process, 20 ms per call. A
full sync stores the organisation (its tokens step is the yardstick: seconds and provider calls);
then 100 grants and 50 revocations happen at the source; a changes run applies them (the token
feed); a second full sync checks that it finds nothing left to change. Goal (issue 14): the
changes run makes ≥ 50× fewer calls and is ≥ 20× faster than the full tokens step.

microsoft: Microsoft Graph on loopback, the same organisation; 100 changes (50 grants of new apps,
50 grants removed) after a full sync; the changes run reads the users' and grants' delta queries.
Yardstick: the whole full sync (issue 21: ≥ 50× fewer calls, ≥ 20× faster).
"""

import argparse
import multiprocessing
import random
from datetime import datetime, timezone

from common import fresh_tenant, timed_run  # noqa: I001  (sets Django up)
from django.conf import settings
from django.core.management import call_command
from django.db import connections

GRANTS, REVOCATIONS = 100, 50


def _serve_graph(users: int, pipe) -> None:
    """Microsoft Graph in a child process; the parent changes it through the pipe."""
    from tests.conftest import demo_org
    from tests.fakegraph import GRAPH_RESOURCE, FakeGraph

    server = FakeGraph().start()
    server.load(*demo_org(users, seed=4))
    server.latency_s = 0.02
    pipe.send(server.config())
    while (command := pipe.recv()) != "stop":
        if command == "calls":
            pipe.send(len(server.paths("/v1.0/")))
        elif command == "change":
            chance = random.Random(21)
            for n, user in enumerate(chance.sample([u["id"] for u in server.users], GRANTS // 2)):
                if n < 7:
                    server.service_principals.append({"id": f"sp-bench-new-{n}", "appId": f"bench-new-{n}", "displayName": f"New app {n}"})
                server.add_grant({"id": f"bench-grant-{n}", "clientId": f"sp-bench-new-{n % 7}", "consentType": "Principal",
                                  "principalId": user, "resourceId": GRAPH_RESOURCE, "scope": "User.Read Files.Read.All"})
            for grant in chance.sample(server.grants[: -(GRANTS // 2)], GRANTS // 2):
                server.remove_grant(grant["id"])
            pipe.send("changed")
    server.stop()


def _serve(users: int, pipe) -> None:
    """The Directory and Reports APIs in a child process; the parent changes them through the pipe."""
    from tests.conftest import demo_org
    from tests.fakegoogle import FakeDirectory

    server = FakeDirectory().start()
    records, tokens = demo_org(users, seed=4)
    server.load(records, tokens)
    server.latency_s = 0.02
    pipe.send(server.url)
    while (command := pipe.recv()) != "stop":
        if command == "calls":
            pipe.send(len(server.requests))
        elif command == "change":
            chance, now = random.Random(14), datetime.now(timezone.utc)
            holders = [user for user, granted in server.tokens.items() if granted]
            for n, user in enumerate(chance.sample([u["id"] for u in records], GRANTS)):
                server.grant(user, {"clientId": f"bench-new-{n % 7}.apps.googleusercontent.com", "displayText": f"New app {n % 7}",
                                    "scopes": ["openid", "https://www.googleapis.com/auth/drive.readonly"]}, now)
            for user in chance.sample(holders, REVOCATIONS):
                server.revoke(user, server.tokens[user][0]["clientId"], now)
            pipe.send("changed")
    server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--provider", choices=("google", "microsoft"), default="google")
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    settings.BALLAST_GOVERNOR = {}  # the default profile, as a sync runs
    connections.close_all()
    here, there = multiprocessing.get_context("fork").Pipe()
    serve = _serve_graph if args.provider == "microsoft" else _serve
    child = multiprocessing.get_context("fork").Process(target=serve, args=(args.users, there), daemon=True)
    child.start()
    google = args.provider == "google"
    first = here.recv()  # google: the server's url; microsoft: a tenant's provider config

    def calls() -> int:
        here.send("calls")
        return here.recv()

    try:
        config = {"base_url": first, "access_token": "static-test-token"} if google else first
        tenant = fresh_tenant(f"bench-changes-{args.provider}", provider=args.provider, provider_config=config)
        before = calls()
        full, full_s = timed_run(tenant, "users,tokens,relations")
        assert full.status == "completed", (full.status, full.error)
        tokens_step = full.step_records.get(name="tokens")
        full_calls = calls() - before  # google: users pages + a tokens.list per user; microsoft: the lists' pages
        here.send("change")
        here.recv()
        before = calls()
        changes, changes_s = timed_run(tenant, "changes")
        changes_calls = calls() - before
        step = changes.step_records.get()
        assert changes.status == "completed", (changes.status, changes.error)
        check, _ = timed_run(tenant, "users,tokens,relations")
        left = check.step_records.get(name="tokens")
    finally:
        here.send("stop")
        child.join()
    # The yardstick: Google's tokens step (issue 14); Microsoft's whole full sync (issue 21).
    yardstick, yardstick_s = ("full sync, tokens step", tokens_step.duration_s) if google else ("full sync", full_s)
    made = f"{GRANTS} grants and {REVOCATIONS} revocations" if google else f"{GRANTS} grant changes (half new, half removed)"
    print(f"{args.users:,} users ({args.provider}), 20 ms per call; {made} after the full sync")
    print(f"{'run':<22}{'seconds':>9}{'calls':>8}{'received':>10}{'created':>9}{'updated':>9}{'deactivated':>13}")
    print(f"{yardstick:<22}{yardstick_s:>9.1f}{full_calls:>8,}{tokens_step.received:>10,}"
          f"{tokens_step.created:>9,}{tokens_step.updated:>9,}{tokens_step.deactivated:>13,}")
    print(f"{'changes run':<22}{changes_s:>9.2f}{changes_calls:>8,}{step.received:>10,}{step.created:>9,}{step.updated:>9,}{step.deactivated:>13,}")
    print(f"(the changes step itself: {step.duration_s:.2f} s of the run's {changes_s:.2f} s)")
    print(f"then a full sync found: {left.created} created, {left.updated} updated, {left.deactivated} revoked (0, 0, 0: nothing the changes missed)")
    fewer, faster = full_calls / changes_calls, yardstick_s / changes_s
    print(f"goals: {fewer:,.0f}× fewer calls (≥ 50×) {'met' if fewer >= 50 else 'NOT met'}; "
          f"{faster:,.0f}× faster (≥ 20×) {'met' if faster >= 20 else 'NOT met'}")


if __name__ == "__main__":
    main()
