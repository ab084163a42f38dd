"""Test a tenant's connection to its provider before a run: one call to each endpoint a sync
uses, in plain words, secrets never shown (`manage.py tenant test`, the admin's Test connection)."""

from dataclasses import asdict, dataclass

from .models import Tenant
from .providers import Check, ConfigError, ProviderError, provider_class
from .secrets import scrub


@dataclass(frozen=True)
class ConnectionReport:
    tenant: str
    provider: str
    checks: list[Check]
    revocation: Check | None = None  # whether revoking would be allowed: told apart, never failing the connection

    @property
    def ok(self) -> bool:
        """Nothing failed (a call not tried for want of data, e.g. tokens in an empty directory, is no failure)."""
        return any(check.ok for check in self.checks) and all(check.ok is not False for check in self.checks)

    @property
    def missing_scopes(self) -> list[str]:
        return list(dict.fromkeys(check.missing_scope for check in self.checks if check.missing_scope))

    @property
    def first_error(self) -> str | None:
        return next((f"{check.name}: {check.detail}" for check in self.checks if check.ok is False), None)

    def as_json(self) -> dict:
        return {
            "tenant": self.tenant, "provider": self.provider, "ok": self.ok,
            "checks": [asdict(check) for check in self.checks],
            "missing_scopes": self.missing_scopes, "first_error": self.first_error,
            "revocation": asdict(self.revocation) if self.revocation else None,
        }


def check_tenant_connection(tenant: Tenant) -> ConnectionReport:
    config = tenant.provider_config
    try:
        provider = provider_class(tenant.provider)(config)
    except ConfigError as exc:
        checks, provider = [Check("config", "the tenant's provider_config", False, str(exc))], None
    revocation = None
    if provider is not None:
        try:
            checks = provider.check_connection()
        except ProviderError as exc:  # a call before the endpoints (a credentials refresh) failed
            checks = [Check("credentials", "the provider's credentials", False, str(exc))]
        else:
            revocation = provider.revocation_check(checks)
        finally:
            provider.close()

    def shown(c: Check) -> Check:  # a provider's message may quote what it was sent: never show a secret of the config
        return Check(c.name, scrub(c.target, config), c.ok, scrub(c.detail, config), c.missing_scope)

    return ConnectionReport(tenant=tenant.slug, provider=tenant.get_provider_display(), checks=[shown(c) for c in checks],
                            revocation=shown(revocation) if revocation else None)
