"""A deterministic synthetic organisation, served page by page like the Directory API.

Every user and every user's tokens derive from (seed, index) alone, so calls can
run in any order or in parallel and a second run sees exactly the same data.
"""

import random
import struct
import time
import unicodedata
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import cached_property, lru_cache
from hashlib import blake2b
from itertools import accumulate

from .base import Page, Provider, require_int

PAGE_SIZE = 500
FIRST_NAMES = [
    "José", "Zoë", "Łukasz", "Søren", "Ayşe", "Chloé", "Nguyễn", "Björn", "Amélie", "Jiří",
    "Siobhán", "Renée", "Ana", "Oluwaseun", "Mårten", "Ingrid", "Dmitrij", "Priya", "Kenji", "Fatma",
    "Liam", "Emma", "Noah", "Mia", "Lucas", "Ada", "Grace", "Alan", "Wei", "Yūki",
]
LAST_NAMES = [
    "Álvarez", "Dvořák", "Ørsted", "Müller", "Þórsdóttir", "Kowalczyk", "Ferreira", "O'Brien", "Nakamura",
    "Öztürk", "Lefèvre", "Nørgaard", "García", "Smith", "Ivanova", "Chen", "Okafor", "Lindqvist",
    "Rossi", "Hernández", "Kim", "Nowak", "Brontë", "Sánchez", "Horváth", "Jónsson", "Tanaka", "Singh",
]
ORG_UNITS = ["/", "/Engineering", "/Engineering/Platform", "/Sales", "/Support", "/Finance", "/People"]
APP_NAMES = [
    "Slack", "Zoom", "Notion", "Figma", "Miro", "Asana", "Trello", "Dropbox", "Calendly", "DocuSign",
    "GitHub", "Atlassian", "Salesforce", "HubSpot", "Loom", "Grammarly", "Canva", "Airtable", "Lucidchart",
    "1Password", "Okta Verify", "Zapier", "Mailchimp", "Intercom", "Linear", "Jira Cloud", "Box", "Webex",
    "ChatGPT", "Otter.ai",
]
SCOPES = [
    "openid",
    "https://www.googleapis.com/auth/userinfo.email",
    "https://www.googleapis.com/auth/userinfo.profile",
    "https://www.googleapis.com/auth/calendar",
    "https://www.googleapis.com/auth/calendar.readonly",
    "https://www.googleapis.com/auth/drive.file",
    "https://www.googleapis.com/auth/drive.readonly",
    "https://www.googleapis.com/auth/gmail.readonly",
    "https://www.googleapis.com/auth/contacts.readonly",
    "https://www.googleapis.com/auth/admin.directory.user.readonly",
]
NEVER = "1970-01-01T00:00:00.000Z"  # what Google reports for "never logged in"


@lru_cache(maxsize=None)  # a few dozen names: each folded once
def _ascii(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(ch for ch in folded.lower() if ch.isalnum()) or "user"


def _timestamp(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")[:19] + ".000Z"  # Google's form; twice as fast as strftime


class DemoProvider(Provider):
    name = "demo"
    config_keys = ("users", "apps", "seed", "latency_ms", "domain")
    not_revocable = "the demo's grants are made up from its seed: there is nothing to revoke"

    @classmethod
    def clean_config(cls, config: dict) -> dict:
        return {
            "users": require_int(config, "users", 100),
            "apps": require_int(config, "apps", 30, minimum=1),
            "seed": require_int(config, "seed", 1),
            "latency_ms": require_int(config, "latency_ms", 0),
            "domain": config.get("domain") or "example.org",
        }

    def _wait(self) -> None:
        with self.guard():
            if self.config["latency_ms"]:
                time.sleep(self.config["latency_ms"] / 1000)
        self.count_call("200")

    @cached_property
    def _apps(self) -> list[dict]:
        rng = random.Random(f"{self.config['seed']}:apps")
        apps = []
        for n in range(self.config["apps"]):
            name = APP_NAMES[n] if n < len(APP_NAMES) else f"Internal tool {n - len(APP_NAMES) + 1}"
            apps.append(
                {
                    "clientId": f"{rng.randrange(10**11, 10**12)}-{_ascii(name)}.apps.googleusercontent.com",
                    "displayText": name,
                    "nativeApp": rng.random() < 0.25,
                    "scopes": sorted(rng.sample(SCOPES, rng.randint(1, 4))),
                }
            )
        return apps

    @cached_property
    def _popularity(self) -> list[float]:
        """Cumulative weights, Zipf-like: a few apps are used by most people, most by a few."""
        return list(accumulate(1 / (rank + 1) ** 1.1 for rank in range(len(self._apps))))

    def _user_id(self, index: int) -> str:
        return str(10**20 + self.config["seed"] * 10**9 + index)

    def _user(self, index: int) -> dict:
        # Ten draws from one hash of (seed, index): a third of the cost of seeding a Mersenne
        # Twister per user (16 → 6 µs), which was the demo's largest cost in the benchmarks.
        digest = blake2b(f"{self.config['seed']}:user:{index}".encode(), digest_size=40).digest()
        d = struct.unpack("<10I", digest)
        first, last = FIRST_NAMES[d[0] % len(FIRST_NAMES)], LAST_NAMES[d[1] % len(LAST_NAMES)]
        created = datetime(2019, 1, 1, tzinfo=UTC) + timedelta(days=d[2] % 2000, seconds=d[3] % 86400)
        logged_in = created + timedelta(days=30 + d[4] % 370) if d[5] / 2**32 > 0.08 else None
        return {
            "kind": "admin#directory#user",
            "id": self._user_id(index),
            "primaryEmail": f"{_ascii(first)}.{_ascii(last)}.{index}@{self.config['domain']}",
            "name": {"givenName": first, "familyName": last, "fullName": f"{first} {last}"},
            "isAdmin": d[6] / 2**32 < 0.02,
            "isDelegatedAdmin": 0.02 <= d[6] / 2**32 < 0.05,  # a role, not super admin
            "suspended": d[7] / 2**32 < 0.04,
            "archived": d[9] / 2**32 < 0.02,
            "orgUnitPath": ORG_UNITS[d[8] % len(ORG_UNITS)],
            "creationTime": _timestamp(created),
            "lastLoginTime": _timestamp(logged_in) if logged_in else NEVER,
        }

    def user_count(self) -> int:
        return self.config["users"]

    def user_pages(self, page_token: str | None = None) -> Iterator[Page]:
        start, total = int(page_token or 0), self.config["users"]
        while start < total or (start == 0 and total == 0):
            self._wait()
            end = min(start + PAGE_SIZE, total)
            next_token = str(end) if end < total else None
            yield Page([self._user(i) for i in range(start, end)], token=page_token, next_token=next_token)
            if next_token is None:
                return
            start, page_token = end, next_token

    def user_tokens(self, user_key: str) -> list[dict]:
        self._wait()
        index = int(user_key) - int(self._user_id(0))
        rng = random.Random(f"{self.config['seed']}:tokens:{index}")
        if rng.random() < 0.22:  # about a fifth of people grant nothing
            return []
        wanted = min(1 + int(rng.expovariate(0.22)), len(self._apps))
        chosen = {id(app): app for app in rng.choices(self._apps, cum_weights=self._popularity, k=wanted)}
        return [
            {
                "kind": "admin#directory#token",
                "clientId": app["clientId"],
                "displayText": app["displayText"],
                "scopes": app["scopes"],
                "nativeApp": app["nativeApp"],
                "anonymous": rng.random() < 0.02,
                "userKey": user_key,
            }
            for app in chosen.values()
        ]
