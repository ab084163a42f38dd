"""A tenant's quota as a person enters it: one form for the admin and the `quota` command."""

from django import forms
from django.core.validators import MinValueValidator

from .ledger.quotas import QUOTA_FIELDS, default_limits
from .models import TenantQuota


def minimum(name: str):
    """The least value the model allows for a quota field (its MinValueValidator, else 0)."""
    limits = [v.limit_value for v in TenantQuota._meta.get_field(name).validators if isinstance(v, MinValueValidator)]
    return max(limits, default=0)


class QuotaForm(forms.ModelForm):
    """Each field's minimum is the model's (one rule, one message) and an empty field shows the
    site's default it follows."""

    class Meta:
        model = TenantQuota
        fields = QUOTA_FIELDS

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        defaults = default_limits()
        for name in QUOTA_FIELDS:
            field = self.fields[name]
            least = minimum(name)
            field.min_value = least
            field.validators = [v for v in field.validators if not isinstance(v, MinValueValidator)] + [MinValueValidator(least)]
            field.widget.attrs["min"] = least
            default = getattr(defaults, name)
            shown = "unlimited" if default is None else str(default)
            field.widget.attrs["placeholder"] = shown  # what an empty field means, inside it
            field.help_text = " ".join(part for part in (field.help_text, f"Empty: the site's default, {shown}.") if part)


def errors_in_words(errors: dict, names: dict | None = None) -> str:
    """A form's errors on one line, each field as the surface calls it (names maps field → label)."""
    names = names or {}
    return "; ".join(f"{names.get(field, field)}: {' '.join(messages)}" for field, messages in errors.items())
