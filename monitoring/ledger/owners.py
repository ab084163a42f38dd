"""Owners of resources and governor events are plain strings, so monitoring needs nobody's models.
A run's is "run-<id>"; with settings.BALLAST_RUN_MODEL, the admin links it to the run's page."""

from django.apps import apps
from django.conf import settings
from django.db.models import CharField, Value
from django.db.models.functions import Cast, Concat
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html

RUN_PREFIX = "run-"


def run_owner(run_id: int) -> str:
    return f"{RUN_PREFIX}{run_id}"


def run_owner_of(run_pk) -> Concat:
    """A run's owner key in SQL, from an expression of its id (OuterRef("pk"), say)."""
    return Concat(Value(RUN_PREFIX), Cast(run_pk, CharField()))


def run_id_of(owner: str) -> int | None:
    """The run's id in a run's owner key; None for any other owner."""
    rest = owner.removeprefix(RUN_PREFIX)
    return int(rest) if rest != owner and rest.isdigit() else None


def owner_link(owner: str):
    """A run's owner as a link to its admin page; any other owner as it is."""
    run_id, model = run_id_of(owner), getattr(settings, "BALLAST_RUN_MODEL", None)
    if run_id is None or not model:
        return owner
    meta = apps.get_model(model)._meta
    try:
        url = reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[run_id])
    except NoReverseMatch:  # the run model has no admin here
        return owner
    return format_html('<a href="{}">{}</a>', url, owner)
