"""How risky a grant is, from open facts, overridable per tenant.

The shipped table (data/scope_risk.csv) ranks scopes high, medium or low, each with what it
reaches and the public document that says so: Google's restricted and sensitive scopes, the
Microsoft Graph permissions that read or write mail, files or the directory or give a path to
admin. A scope it does not name is unknown (ranked above low: it may reach anything). A
tenant's RiskOverride rows rank a scope their own way, or fix an application's risk outright.

A token's risk is its riskiest scope's. An application's is the riskiest scope its active
grants and admin consent hold, raised a level for an admin consent (every user, granted at
once) and for many users (BALLAST_RISK_MANY_USERS). Both are stored, with the application's
user count and scopes, and recomputed only where something changed: the grant timeline's
trigger marks an application stale when one of its tokens changes, and the tokens and changes
steps recompute the stale ones when they end; saving or deleting an override recomputes the
tenant's (syncapp.signals), and so does a full tokens step (a new table takes effect at the
next full sync). Never per request.
"""

import csv
from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from django.conf import settings
from django.db.models import Count, Q

from .models import Application, Risk, RiskOverride, Token

TABLE = Path(__file__).with_name("data") / "scope_risk.csv"
LEVELS = {label: value for value, label in Risk.choices}
CHUNK = 500  # applications recomputed per query


@dataclass(frozen=True)
class Ranking:
    level: int
    why: str
    source: str  # a public document, or the tenant's override


@lru_cache(maxsize=1)
def shipped() -> dict[str, Ranking]:
    """The shipped table, scope → ranking."""
    with TABLE.open(newline="", encoding="utf-8") as file:
        return {row["scope"]: Ranking(LEVELS[row["level"]], row["why"], row["source"]) for row in csv.DictReader(file)}


@dataclass(frozen=True)
class Rankings:
    """One tenant's rankings: the shipped table under its overrides."""

    scopes: dict[str, Ranking]
    applications: dict[str, Ranking]  # client id → a fixed risk

    @classmethod
    def of(cls, tenant_id: int) -> "Rankings":
        scopes, applications = dict(shipped()), {}
        for override in RiskOverride.objects.filter(tenant_id=tenant_id):
            ranking = Ranking(override.level, override.note, "override")
            if override.scope:
                scopes[override.scope] = ranking
            else:
                applications[override.client_id] = ranking
        return cls(scopes, applications)

    def scope(self, scope: str) -> Ranking:
        return self.scopes.get(scope) or Ranking(Risk.UNKNOWN, "not in the table", "")

    def riskiest(self, scopes) -> tuple[int, str]:
        """The level of a set of scopes and the scope that sets it (none: low)."""
        if not scopes:
            return Risk.LOW, ""
        scope = max(sorted(scopes), key=lambda s: self.scope(s).level)
        return self.scope(scope).level, scope

    def application(self, client_id: str, scopes, *, users: int, admin_consent: bool) -> tuple[int, str]:
        """An application's level and what set it."""
        if client_id in self.applications:
            fixed = self.applications[client_id]
            return fixed.level, f"override: {fixed.why}"
        if not scopes:
            return Risk.LOW, "no active grant"
        level, scope = self.riskiest(scopes)
        reason = f"{scope}: {self.scope(scope).why}"
        raised = [why for why, on in (("admin consent", admin_consent),
                                      (f"{users:,} users", users >= getattr(settings, "BALLAST_RISK_MANY_USERS", 100))) if on]
        for _ in raised:
            level = Risk.MEDIUM if level < Risk.MEDIUM else min(level + 1, Risk.HIGH)
        if raised:
            reason += f"; raised for {' and '.join(raised)}"
        return level, reason[:300]


def refresh_risk(tenant_id: int, *, every: bool = False) -> int:
    """Recompute the stale applications of a tenant (every one, if asked): their users, scopes and
    risk, and their tokens' risk. Returns how many were recomputed."""
    rankings = Rankings.of(tenant_id)
    apps = Application.objects.filter(tenant_id=tenant_id)
    if not every:
        apps = apps.filter(risk_stale=True)
    ids = list(apps.order_by("pk").values_list("pk", flat=True))
    for start in range(0, len(ids), CHUNK):
        _refresh(tenant_id, ids[start : start + CHUNK], rankings)
    return len(ids)


def _refresh(tenant_id: int, ids: list[int], rankings: Rankings) -> None:
    # Unmarked first: a token that changes while this reads marks its application stale again.
    Application.objects.filter(pk__in=ids).update(risk_stale=False)
    held: dict[int, set] = defaultdict(set)
    users: dict[int, int] = defaultdict(int)
    token_levels: dict[tuple[int, str], tuple[int, list]] = {}
    # One row per application and distinct set of scopes: few, however many users hold them.
    groups = (Token.objects.filter(tenant_id=tenant_id, application_id__in=ids).order_by()
              .values("application_id", "scopes").annotate(active=Count("pk", filter=Q(revoked_at__isnull=True))))
    for group in groups:
        app_id, scopes = group["application_id"], group["scopes"]
        if group["active"]:
            held[app_id].update(scopes)
            users[app_id] += group["active"]
        token_levels[(app_id, repr(scopes))] = (rankings.riskiest(scopes)[0], scopes)
    for (app_id, _), (level, scopes) in token_levels.items():
        Token.objects.filter(application_id=app_id, scopes=scopes).exclude(risk=level).update(risk=level)
    for app in Application.objects.filter(pk__in=ids).only("pk", "client_id", "org_scopes", "users", "scopes", "risk", "risk_reason"):
        scopes = sorted(held[app.pk] | set(app.org_scopes))
        level, reason = rankings.application(app.client_id, scopes, users=users[app.pk], admin_consent=bool(app.org_scopes))
        if (app.users, app.scopes, app.risk, app.risk_reason) != (users[app.pk], scopes, level, reason):
            Application.objects.filter(pk=app.pk).update(users=users[app.pk], scopes=scopes, risk=level, risk_reason=reason)
