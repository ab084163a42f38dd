"""The tenant model, reached through settings (as contrib.auth reaches AUTH_USER_MODEL)."""

from django.apps import apps
from django.conf import settings


def tenant_model():
    return apps.get_model(settings.BALLAST_TENANT_MODEL, require_ready=False)


def get_tenant(slug: str):
    """The tenant with this slug; raises the model's DoesNotExist."""
    return tenant_model().objects.get(**{getattr(settings, "BALLAST_TENANT_SLUG_FIELD", "slug"): slug})
