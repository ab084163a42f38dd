"""The rules for what a person may enter, in one place: the admin, the management commands and
the API all validate through these forms, so a value refused by one is refused by all, with the
same words. Errors are keyed by field; each surface names the field its own way (a form field,
a --flag, a JSON key)."""

from collections.abc import Iterable

from django import forms
from django.core.exceptions import ValidationError

from monitoring.governor.profiles import profile_names, route_policy

from .exportfiles import GAM_COMMANDS
from .models import Tenant
from .providers import ConfigError, provider_class
from .secrets import masked, unmasked
from .step_registry import FULL_SYNC, STEPS, offered_steps, supported_steps


def clean_steps(steps: str | Iterable[str] | None) -> list[str]:
    """'users,tokens' or a list → steps in canonical order (None or empty: a full sync); unknown
    names are refused, and so is "changes" beside another step (it keeps tokens and relations itself)."""
    if steps in (None, "", [], ()):
        return list(FULL_SYNC)
    if not isinstance(steps, str) and not (isinstance(steps, list | tuple) and all(isinstance(s, str) for s in steps)):
        raise ValidationError('must be a list of step names or a comma-separated string, e.g. "users,tokens"', code="invalid")
    names = [s.strip() for s in (steps.split(",") if isinstance(steps, str) else steps) if s.strip()]
    offered = offered_steps()
    unknown = [n for n in names if n not in offered]
    if unknown or not names:
        raise ValidationError(f"unknown steps {', '.join(unknown) or '(none)'}; choose from {', '.join(offered)}", code="invalid")
    alone = next((STEPS[n] for n in names if STEPS[n].alone), None)
    if alone and len(set(names)) > 1:
        raise ValidationError(f"{alone.name} runs alone: {alone.alone}", code="invalid")
    return [n for n in STEPS if n in names]


def clean_profile(profile) -> str:
    """A resource profile's name, or "" for the tenant's own."""
    if profile in (None, ""):
        return ""
    if not isinstance(profile, str) or profile not in profile_names():
        raise ValidationError(f"unknown profile {profile!r}; choose from {', '.join(profile_names())}", code="invalid")
    return profile


class StepsField(forms.Field):
    """Ticked boxes in the admin; "users,tokens" or a list from the API and the commands."""

    widget = forms.CheckboxSelectMultiple(choices=[(s, s) for s in offered_steps()])

    def to_python(self, value):
        return clean_steps(value)


class ProfileField(forms.Field):
    def __init__(self, *, blank_label: str, **kwargs):
        super().__init__(widget=forms.Select(choices=[("", blank_label)] + [(p, p) for p in profile_names()]), **kwargs)

    def to_python(self, value):
        return clean_profile(value)


def steps_help(supported: list[str], nothing_named: str = "None ticked") -> str:
    """What a run does when no step is named, then what each other step does, and whether it runs alone."""
    others = [STEPS[n] for n in supported if not STEPS[n].full_sync]
    return " ".join([f"{nothing_named}: a full sync ({', '.join(FULL_SYNC)})."]
                    + [f"{s.name.capitalize()} ({s.does}){' runs alone' if s.alone else ''}." for s in others])


class StartRunForm(forms.Form):
    """What a run may be started with: which steps (none named: all; only those the tenant's
    provider supports), under which resource profile."""

    steps = StepsField(required=False)
    profile = ProfileField(required=False, blank_label="the tenant's", help_text="Empty: the tenant's profile, else the site's.")

    def __init__(self, *args, provider: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.supported = supported_steps(provider_class(provider)) if provider else offered_steps()
        self.provider = provider
        self.fields["steps"].widget = forms.CheckboxSelectMultiple(choices=[(s, s) for s in self.supported])
        self.fields["steps"].help_text = steps_help(self.supported)

    def clean_steps(self):
        steps = self.cleaned_data["steps"]
        unsupported = [s for s in steps if s not in self.supported]
        if unsupported:
            raise ValidationError(
                f"the {self.provider} provider has no {', '.join(unsupported)} step ({'; '.join(STEPS[s].unsupported for s in unsupported)}); "
                f"choose from {', '.join(self.supported)}", code="invalid",
            )
        return steps


def run_request(*, steps=None, profile=None, provider: str | None = None) -> dict:
    """Steps and profile checked by StartRunForm's rules (for a tenant of this provider, when
    given): {"steps": [...], "profile": "..."}, or ValidationError keyed by field."""
    form = StartRunForm({"steps": steps, "profile": profile}, provider=provider)
    if not form.is_valid():
        raise ValidationError(form.errors.as_data())
    return form.cleaned_data


class TenantForm(forms.ModelForm):
    sync_profile = ProfileField(
        required=False, blank_label="the site's", help_text=Tenant._meta.get_field("sync_profile").help_text, label="Sync profile"
    )

    class Meta:
        model = Tenant
        fields = ["slug", "name", "provider", "provider_config", "active", "sync_every_minutes", "changes_every_minutes",
                  "sync_window", "window_profile", "outside_window_profile", "sync_profile", "governor_settings"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["provider_config"] = masked(self.instance.provider_config)

    def clean(self):
        cleaned = super().clean()
        config = cleaned.get("provider_config")
        if config is not None and "provider" in cleaned:
            if not isinstance(config, dict):
                self.add_error("provider_config", 'Enter a JSON object, e.g. {"users": 100}.')
            else:
                stored = Tenant.objects.get(pk=self.instance.pk).provider_config if self.instance.pk else {}
                config = cleaned["provider_config"] = unmasked(config, stored)
                try:
                    provider_class(cleaned["provider"]).checked_config(config)
                except ConfigError as exc:
                    self.add_error("provider_config", f"{cleaned['provider']} provider: {exc}")
        window = cleaned.get("sync_window")
        if window and window.partition("-")[0] == window.partition("-")[2]:
            self.add_error("sync_window", "The window starts and ends at the same time: leave it empty for any time.")
        if not window and (cleaned.get("window_profile") or cleaned.get("outside_window_profile")):
            self.add_error("sync_window", "Profiles inside and outside a window need a window.")
        if cleaned.get("changes_every_minutes") and "provider" in cleaned and not provider_class(cleaned["provider"]).has_changes_feed:
            self.add_error("changes_every_minutes", f"the {cleaned['provider']} provider has no feed of token changes")
        overrides = cleaned.get("governor_settings")
        if overrides is not None:
            if not isinstance(overrides, dict):
                self.add_error("governor_settings", 'Enter a JSON object, e.g. {"max_cpu_percent": 50}.')
            else:
                try:
                    route_policy("users", profile=cleaned.get("sync_profile") or None, overrides=overrides)
                except (ValueError, TypeError) as exc:
                    self.add_error("governor_settings", str(exc))
        return cleaned


class ImportFilesForm(forms.Form):
    """The admin's Import files: what `manage.py import` takes, as uploads."""

    users = forms.FileField(required=False, help_text=f"`{GAM_COMMANDS['users']}` CSV, or users.list objects as JSON lines (.gz read as a stream).")
    tokens = forms.FileField(required=False, help_text=f"`{GAM_COMMANDS['tokens']}` CSV (every user, suspended ones too), or token objects as JSON lines.")
    format = forms.ChoiceField(choices=[("", "from each file's name"), ("csv", "csv"), ("jsonl", "jsonl")], required=False)
    complete = forms.BooleanField(
        required=False, label="A whole export",
        help_text="Users and tokens the files lack are marked deleted and revoked. Unticked: nothing is.",
    )

    def clean(self):
        cleaned = super().clean()
        if not (cleaned.get("users") or cleaned.get("tokens")):
            raise ValidationError("Choose a users file, a tokens file, or both.")
        return cleaned
