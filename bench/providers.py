"""A full sync of the same organisation through the Google provider and the Microsoft provider,
each against its API on loopback (served by a child process, 20 ms per call), in one run:

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/ballast .venv/bin/python bench/providers.py [--users 10000] [--rounds 2]

Per provider and round: each step's rows/s (records read ÷ the step's seconds), the run's
seconds and the provider calls. Google calls tokens.list once per user; Microsoft reads the
organisation's grants as one paged list (999 a page), and writes them through a stage. The
governor runs with the default profile, as a sync does.
"""

import argparse

from common import directory_in_child, fresh_tenant, graph_in_child, timed_run  # noqa: I001  (sets Django up)
from django.conf import settings
from django.core.management import call_command

STEPS = ("users", "tokens", "relations")


def sync(provider: str, config: dict) -> dict:
    tenant = fresh_tenant(f"bench-{provider}", provider=provider, provider_config=config)
    run, seconds = timed_run(tenant, ",".join(STEPS))
    assert run.status == "completed", (run.status, run.error)
    steps = {s.name: s for s in run.step_records.all()}
    return {"seconds": seconds, "rates": {n: steps[n].received / steps[n].duration_s for n in STEPS},
            "received": {n: steps[n].received for n in STEPS}, "tokens": steps["tokens"].created}


def google(users: int) -> dict:
    with directory_in_child(users) as (url, counts):
        result = sync("google", {"base_url": url, "access_token": "static-test-token"})
    return {**result, "calls": counts["calls"]}


def microsoft(users: int) -> dict:
    with graph_in_child(users) as (config, counts):
        result = sync("microsoft", config)
    return {**result, "calls": counts["calls"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    settings.BALLAST_GOVERNOR = {}
    print(f"{args.users:,} users, 20 ms per call; rows/s = records read ÷ the step's seconds")
    print(f"{'provider':<11}{'round':>6}{'run s':>8}{'calls':>8}{'users r/s':>11}{'tokens r/s':>12}{'relations r/s':>15}{'tokens':>9}", flush=True)
    results = {"google": [], "microsoft": []}
    for round_ in range(1, args.rounds + 1):
        for name, case in (("google", google), ("microsoft", microsoft)):
            r = case(args.users)
            results[name].append(r)
            rates = r["rates"]
            print(f"{name:<11}{round_:>6}{r['seconds']:>8.1f}{r['calls']:>8,}{rates['users']:>11,.0f}{rates['tokens']:>12,.0f}"
                  f"{rates['relations']:>15,.0f}{r['tokens']:>9,}", flush=True)
    g, m = (min(results[n], key=lambda r: r["seconds"]) for n in ("google", "microsoft"))
    assert g["tokens"] == m["tokens"], "both providers must store the same tokens"
    print(f"Microsoft ÷ Google, best rounds: run time {m['seconds'] / g['seconds']:.2f}×, calls {m['calls'] / g['calls']:.3f}×, "
          + ", ".join(f"{n} rows/s {m['rates'][n] / g['rates'][n]:.2f}×" for n in STEPS))


if __name__ == "__main__":
    main()
