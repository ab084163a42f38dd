"""Identity providers, picked by Tenant.provider."""

from .base import Check, ConfigError, DeltaExpired, IncompleteExport, Page, PageTokenRefused, Provider, ProviderError, RevocationRefused, Revoked


def provider_class(name: str) -> type[Provider]:
    from .demo import DemoProvider
    from .google import GoogleProvider
    from .microsoft import MicrosoftProvider

    classes = {cls.name: cls for cls in (DemoProvider, GoogleProvider, MicrosoftProvider)}
    try:
        return classes[name]
    except KeyError:
        raise ConfigError(f"unknown provider {name!r}; expected one of {', '.join(sorted(classes))}") from None


def get_provider(tenant, source: dict | None = None) -> Provider:
    """The tenant's provider; or, for a run that imports files (its source), those files."""
    if source:
        from .files import FileProvider

        return FileProvider(source)
    return provider_class(tenant.provider)(tenant.provider_config)


__all__ = ["Check", "ConfigError", "DeltaExpired", "IncompleteExport", "Page", "PageTokenRefused", "Provider", "ProviderError", "RevocationRefused", "Revoked", "get_provider", "provider_class"]
