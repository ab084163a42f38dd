"""The directory kept in sync, and the runs that sync it. Fields only: logic lives in services."""

from django.core.validators import MinValueValidator, RegexValidator, validate_email
from django.db import models
from django.utils import timezone

from monitoring.governor.profiles import profile_names
from monitoring.ledger.owners import run_owner

from .encryption import SecretsJSONField
from .step_registry import STEP_NAMES

WINDOW = r"^([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d$"  # HH:MM-HH:MM


class Tenant(models.Model):
    class Provider(models.TextChoices):
        DEMO = "demo", "Demo (synthetic organisation)"
        GOOGLE = "google", "Google Workspace"
        MICROSOFT = "microsoft", "Microsoft Entra ID (Graph)"

    slug = models.SlugField(max_length=50, unique=True)
    name = models.CharField(max_length=200)
    provider = models.CharField(max_length=20, choices=Provider.choices, default=Provider.DEMO)
    provider_config = SecretsJSONField(
        default=dict, blank=True, help_text="Provider settings. Secret values are shown masked and kept when left masked; stored encrypted (SECRETS_KEYS)."
    )
    active = models.BooleanField(default=True)
    sync_every_minutes = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)], help_text="Run a full sync this often on the cluster. Empty: no schedule."
    )
    changes_every_minutes = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)],
        help_text="Apply the provider's changes this often (Google's token feed, Microsoft Graph's delta queries). Empty: full syncs only.",
    )
    sync_window = models.CharField(
        max_length=11, blank=True, validators=[RegexValidator(WINDOW, "Enter a local-time window as HH:MM-HH:MM, e.g. 01:00-05:00.")],
        help_text="Scheduled full syncs in this window of local time, e.g. 01:00-05:00 (it may pass midnight). Empty: at any time.",
    )
    window_profile = models.CharField(
        max_length=20, blank=True, choices=[(name, name) for name in profile_names()],
        help_text="Resource profile of scheduled full syncs inside the window. Empty: the tenant's.",
    )
    outside_window_profile = models.CharField(
        max_length=20, blank=True, choices=[(name, name) for name in profile_names()],
        help_text="Resource profile of scheduled full syncs outside the window. Empty: none runs outside it.",
    )
    sync_profile = models.CharField(
        max_length=20, blank=True, choices=[(name, name) for name in profile_names()],
        help_text="Resource profile for this tenant's runs. Empty: the site's SYNC_PROFILE.",
    )
    changes_cursor = models.DateTimeField(
        null=True, blank=True,
        help_text="Where the next changes step reads the token feed from (less the overlap). Set by a full tokens step that completed; moved by each changes step.",
    )
    users_delta_link = models.TextField(
        blank=True, help_text="Microsoft Graph's deltaLink for users: where the next changes step reads users' changes from. Set by a full users step.",
    )
    grants_delta_link = models.TextField(
        blank=True, help_text="Microsoft Graph's deltaLink for permission grants: where the next changes step reads grants' changes from. Set by a full tokens step.",
    )
    governor_settings = models.JSONField(
        default=dict, blank=True,
        help_text='Overrides of the governor\'s limits for this tenant, e.g. {"max_cpu_percent": 50, "batch_size": 20}.',
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self):
        return self.slug


class DirectoryUser(models.Model):
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="users")
    external_id = models.CharField(max_length=64)
    primary_email = models.CharField(max_length=254)
    full_name = models.CharField(max_length=200, blank=True)
    is_admin = models.BooleanField(default=False, help_text="A super administrator.")
    is_delegated_admin = models.BooleanField(default=False, help_text="An administrator with a role that is not super admin (Google's isDelegatedAdmin).")
    is_suspended = models.BooleanField(default=False)
    is_archived = models.BooleanField(default=False, help_text="Archived: no longer working, the account kept (Google's archived users).")
    org_unit = models.CharField(max_length=255, blank=True)
    last_login_at = models.DateTimeField(null=True, blank=True)
    created_at_source = models.DateTimeField(null=True, blank=True)
    first_seen = models.DateTimeField()
    # NULL until the users step has seen the row (the tokens step may create it first).
    last_seen = models.DateTimeField(null=True, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "directory user"
        constraints = [models.UniqueConstraint(fields=["tenant", "external_id"], name="user_unique_per_tenant")]
        indexes = [models.Index(fields=["tenant", "primary_email"])]

    def __str__(self):
        return self.primary_email


class Risk(models.IntegerChoices):
    """How much a grant can reach, from syncapp/data/scope_risk.csv and the tenant's overrides.
    Unknown ranks above low: a scope nobody ranked may reach anything."""

    LOW = 1, "low"
    UNKNOWN = 2, "unknown"
    MEDIUM = 3, "medium"
    HIGH = 4, "high"


class Application(models.Model):
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="applications")
    client_id = models.CharField(max_length=255)
    display_name = models.CharField(max_length=255, blank=True)
    native_app = models.BooleanField(default=False)
    client_type = models.CharField(
        max_length=40, blank=True,
        help_text="The kind of client, as the provider's feed names it (WEB, NATIVE_ANDROID, NATIVE_IOS, NATIVE_DESKTOP…). Empty: not told yet.",
    )
    org_scopes = models.JSONField(
        default=list, blank=True,
        help_text="Scopes an administrator granted for the whole organisation (Microsoft's admin consent), not per user.",
    )
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()
    # Kept by syncapp.risk from the application's active grants, when they or the overrides change.
    users = models.PositiveIntegerField(default=0, help_text="Users holding an active grant.")
    scopes = models.JSONField(default=list, blank=True, help_text="Every scope its active grants and admin consent hold.")
    risk = models.PositiveSmallIntegerField(choices=Risk.choices, default=Risk.UNKNOWN)
    risk_reason = models.CharField(max_length=300, blank=True, help_text="What set the risk: the riskiest scope, and what raised it.")
    # Set by the database whenever one of its tokens changes (the grant timeline's trigger).
    risk_stale = models.BooleanField(default=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "client_id"], name="app_unique_per_tenant")]
        indexes = [models.Index(fields=["tenant", "risk_stale"], name="app_risk_stale")]

    def __str__(self):
        return self.display_name or self.client_id


class Token(models.Model):
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="tokens")
    user = models.ForeignKey(DirectoryUser, on_delete=models.CASCADE, related_name="tokens")
    application = models.ForeignKey(Application, on_delete=models.CASCADE, related_name="tokens")
    scopes = models.JSONField(default=list)
    anonymous = models.BooleanField(default=False)
    native_app = models.BooleanField(default=False)
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    risk = models.PositiveSmallIntegerField(choices=Risk.choices, default=Risk.UNKNOWN, help_text="Its riskiest scope's.")
    last_used_at = models.DateTimeField(
        null=True, blank=True, help_text="The latest use the provider's feed told of (Google's token activity events). Empty: none seen.",
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "user", "application"], name="token_unique_per_user_app")
        ]
        permissions = [("revoke_token", "Can request and approve the revocation of grants")]

    def __str__(self):
        return f"{self.user} → {self.application}"


class UserAppRelation(models.Model):
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="relations")
    user = models.ForeignKey(DirectoryUser, on_delete=models.CASCADE, related_name="relations")
    application = models.ForeignKey(Application, on_delete=models.CASCADE, related_name="relations")
    scopes = models.JSONField(default=list)
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()
    active = models.BooleanField(default=True)

    class Meta:
        verbose_name = "user–application relation"
        constraints = [
            models.UniqueConstraint(fields=["tenant", "user", "application"], name="relation_unique_per_user_app")
        ]

    def __str__(self):
        return f"{self.user} ↔ {self.application}"


class GrantEvent(models.Model):
    """One change of a token, as the grant timeline keeps it past the provider's own history
    (Google keeps 180 days). Written by the database in the statement that changes the token
    (a trigger; see syncapp.timeline), so it is exact and a write that changes nothing writes
    none: a resumed step cannot record a change twice."""

    class Kind(models.TextChoices):
        GRANTED = "granted", "granted"
        WIDENED = "widened", "scopes widened"
        NARROWED = "narrowed", "scopes narrowed"
        CHANGED = "changed", "scopes changed"
        REVOKED = "revoked", "revoked"
        REGRANTED = "regranted", "granted again"

    class Via(models.TextChoices):
        SYNC = "sync", "full sync"
        CHANGES = "changes", "changes feed"
        IMPORT = "import", "import"
        REVOKE = "revoke", "revoked from Ballast"
        BEFORE = "before", "held before the timeline began"
        OTHER = "", "other"

    # The trigger copies these from the token row it records, so they cannot disagree; without
    # database constraints and single-column indexes (the composite ones below lead with them) a
    # row costs its inserts alone, not four foreign-key checks and five more indexes: a first
    # sync writes one per token. Deleting goes through Django's cascade, as everywhere here.
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+", db_constraint=False, db_index=False)
    token = models.ForeignKey("Token", on_delete=models.CASCADE, related_name="events", db_constraint=False, db_index=False)
    user = models.ForeignKey(DirectoryUser, on_delete=models.CASCADE, related_name="+", db_constraint=False, db_index=False)
    application = models.ForeignKey(Application, on_delete=models.CASCADE, related_name="+", db_constraint=False, db_index=False)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    at = models.DateTimeField(help_text="When the change was seen (a revocation: when it happened, where the source says).")
    scopes = models.JSONField(default=list, help_text="The scopes the token held after the change (a revocation: those it lost).")
    added = models.JSONField(default=list)
    removed = models.JSONField(default=list)
    run = models.ForeignKey("SyncRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_constraint=False)
    via = models.CharField(max_length=10, choices=Via.choices, blank=True)

    class Meta:
        verbose_name = "grant timeline entry"
        verbose_name_plural = "grant timeline"
        ordering = ["-at", "-id"]
        indexes = [
            models.Index(fields=["tenant", "at"], name="grant_event_tenant"),
            models.Index(fields=["token", "at"], name="grant_event_token"),
            models.Index(fields=["user", "at"], name="grant_event_user"),
            models.Index(fields=["application", "at"], name="grant_event_application"),
        ]

    def __str__(self):
        return f"{self.get_kind_display()} {self.at:%Y-%m-%d %H:%M}"


class RiskOverride(models.Model):
    """A tenant's own ranking of a scope or of an application, over the shipped table."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="risk_overrides")
    scope = models.CharField(max_length=500, blank=True, help_text="A scope as tokens hold it, e.g. https://www.googleapis.com/auth/drive or Microsoft Graph: Mail.Read.")
    client_id = models.CharField(max_length=255, blank=True, help_text="Or an application's client id: its risk is this level, whatever its scopes.")
    level = models.PositiveSmallIntegerField(choices=Risk.choices)
    note = models.CharField(max_length=300, help_text="Why: shown with the risk it sets.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "risk override"
        constraints = [
            models.CheckConstraint(condition=(models.Q(scope="") & ~models.Q(client_id="")) | (~models.Q(scope="") & models.Q(client_id="")),
                                   name="risk_override_scope_or_client"),
            models.UniqueConstraint(fields=["tenant", "scope", "client_id"], name="risk_override_once"),
        ]

    def __str__(self):
        return f"{self.scope or self.client_id} → {self.get_level_display()}"


def _duration_s(started_at, finished_at) -> float | None:
    """Seconds from start to finish, or to now while still running."""
    if not started_at:
        return None
    return round(((finished_at or timezone.now()) - started_at).total_seconds(), 3)


class Status(models.TextChoices):
    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    COMPLETED_WITH_ERRORS = "completed_with_errors", "completed with errors"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"
    SKIPPED = "skipped"


ENDED = frozenset(
    {
        Status.COMPLETED,
        Status.COMPLETED_WITH_ERRORS,
        Status.FAILED,
        Status.CANCELLED,
        Status.INTERRUPTED,
        Status.SKIPPED,
    }
)


class StopReason(models.TextChoices):
    """Why a step or run ended other than completed: code decides on this, never on error text."""

    NONE = "", "—"
    CANCELLED = "cancelled", "cancelled by a person"
    SIGNAL = "signal", "its process was told to stop"
    WORKER_LOST = "worker_lost", "its process died"
    OVERLOADED = "overloaded", "system consistently overloaded"
    CIRCUIT_OPEN = "circuit_open", "not started: the machine was overloaded"
    UPSTREAM = "upstream", "not started: the step it needs did not complete"
    PROVIDER = "provider", "the provider failed"
    CONFIG = "config", "bad settings"
    DATABASE = "database", "the database failed"
    CRASHED = "crashed", "an unexpected error"


class SyncRun(models.Model):
    class Trigger(models.TextChoices):
        ADMIN = "admin"
        COMMAND = "command"
        SCHEDULE = "schedule"
        API = "api"
        IMPORT = "import"
        REVOKE = "revoke"  # an approved revocation request

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="runs")
    trigger = models.CharField(max_length=10, choices=Trigger.choices)
    steps = models.CharField(
        max_length=40,
        validators=[RegexValidator(rf"^({'|'.join(STEP_NAMES)})(,({'|'.join(STEP_NAMES)}))*$")],
        help_text="Comma-separated steps asked for.",
    )
    status = models.CharField(max_length=24, choices=Status.choices, default=Status.QUEUED, db_index=True)
    queued_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    task_id = models.CharField(max_length=64, blank=True, help_text="django-q2 task that coordinates the run.")
    profile = models.CharField(max_length=20, blank=True, help_text="Resource profile for this run. Empty: the tenant's.")
    parallel = models.BooleanField(null=True, help_text="Users and tokens side by side (decided when the run began).")
    in_process = models.BooleanField(default=False, help_text="Carried out by the process that started it, not the cluster.")
    waiting_reason = models.CharField(max_length=300, blank=True, help_text="Why a queued run has not started yet.")
    stop_reason = models.CharField(max_length=20, choices=StopReason.choices, blank=True)
    source = models.JSONField(
        default=dict, blank=True,
        help_text='What an import reads instead of the provider: {"users": path, "tokens": path, "format", "complete"}. Empty: the provider.',
    )

    class Meta:
        ordering = ["-id"]
        verbose_name = "sync run"

    def __str__(self):
        return f"run {self.pk} ({self.tenant})"

    @property
    def step_names(self) -> list[str]:
        return [name for name in self.steps.split(",") if name]

    @property
    def duration_s(self) -> float | None:
        return _duration_s(self.started_at, self.finished_at)

    @property
    def owner(self) -> str:
        """The run as the ledger and the governor know it (monitoring knows nobody's models)."""
        return run_owner(self.pk)


COUNTERS = ("received", "created", "updated", "unchanged", "deactivated", "invalid", "failed")


class SyncStep(models.Model):
    run = models.ForeignKey(SyncRun, on_delete=models.CASCADE, related_name="step_records")
    name = models.CharField(max_length=12, choices=[(n, n) for n in STEP_NAMES])
    status = models.CharField(max_length=24, choices=Status.choices, default=Status.PENDING)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    task_id = models.CharField(max_length=64, blank=True)
    error = models.TextField(blank=True)
    stop_reason = models.CharField(max_length=20, choices=StopReason.choices, blank=True)
    received = models.PositiveIntegerField(default=0)
    created = models.PositiveIntegerField(default=0)
    updated = models.PositiveIntegerField(default=0)
    unchanged = models.PositiveIntegerField(default=0)
    deactivated = models.PositiveIntegerField(default=0)
    invalid = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    invalid_samples = models.JSONField(default=list, blank=True)
    held = models.PositiveIntegerField(
        default=0, help_text="Deletions or revocations the accidental-delete guard held for a person to confirm.",
    )
    held_confirmed_at = models.DateTimeField(null=True, blank=True)
    held_confirmed_by = models.CharField(max_length=150, blank=True, help_text="Who confirmed the held deletions.")
    # Progress, for its bar and ETA: work units (users read; users asked for tokens; tokens walked).
    done = models.PositiveIntegerField(default=0, help_text="Work done: users read, users asked for their tokens, or tokens walked.")
    expected = models.PositiveIntegerField(
        null=True, blank=True, help_text="Work the step expects: the source's count where it gives one, else what earlier syncs stored.",
    )
    # The rate of a step changes as it goes (a governor that holds it, a table that grows): its ETA
    # reckons with the last seconds, not the average since it started.
    recent_rate = models.FloatField(null=True, blank=True, help_text="Work done per second lately: an average over about the last 3 s.")
    peak_rss_bytes = models.BigIntegerField(null=True, blank=True)
    mean_cpu_percent = models.FloatField(null=True, blank=True)
    peak_cpu_percent = models.FloatField(null=True, blank=True)
    governor_wait_s = models.FloatField(default=0.0, help_text="Seconds spent waiting on the resource governor.")
    # Written in the same transaction as each batch, so a later run can resume.
    checkpoint = models.JSONField(default=dict, blank=True)
    resumed_from = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="The stopped step whose checkpoint this one continued from.",
    )
    # Rows stamped since then count as seen: the start of the first step of a resumed chain.
    seen_since = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "id"]
        constraints = [models.UniqueConstraint(fields=["run", "name"], name="one_record_per_step")]

    def __str__(self):
        return f"{self.name} of run {self.run_id}"

    @property
    def ended(self) -> bool:
        return self.status in ENDED

    @property
    def duration_s(self) -> float | None:
        return _duration_s(self.started_at, self.finished_at)


class AppliedChange(models.Model):
    """A token event of the provider's feed that a changes step applied: feeds are read with an
    overlap, so the same event comes again, and is skipped. Kept for a while past the overlap."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    event_time = models.DateTimeField()
    unique_qualifier = models.CharField(max_length=64)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "event_time", "unique_qualifier"], name="change_applied_once")]


class StagedToken(models.Model):
    """A token record read from a source that lists every token at once (Microsoft's grants, a
    token export), kept until the whole list is read: one user's grants to one app may be
    anywhere in it, and a token is written once, its scopes united, so that counts stay exact.
    An empty user_key holds an admin consent: the application's org-wide scopes."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    stage = models.BigIntegerField(help_text="The tokens step whose read this belongs to (resumed steps keep it).")
    # user_key, a unit separator, client_id: one column to walk the stage by (a keyset over two
    # columns joined by OR would make the database scan the rest of the stage for each batch).
    pair = models.CharField(max_length=511)
    user_key = models.CharField(max_length=255, blank=True)
    email = models.CharField(max_length=254, blank=True)
    client_id = models.CharField(max_length=255)
    display_name = models.CharField(max_length=255, blank=True)
    native_app = models.BooleanField(default=False)
    anonymous = models.BooleanField(default=False)
    scopes = models.JSONField(default=list)

    class Meta:
        indexes = [models.Index(fields=["stage", "pair", "id"], name="staged_token_order")]


class DelegatedGrant(models.Model):
    """One of Microsoft Graph's oauth2PermissionGrants as the last read saw it: a user's token for
    an app is the union of that user's grants to the app (one grant per API), and a delta query
    names a removed grant by its id alone, so the changes step needs each grant to re-unite the
    token it belonged to. An empty user_key holds an admin consent (AllPrincipals)."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    grant_id = models.CharField(max_length=255)
    user_key = models.CharField(max_length=255, blank=True, help_text="The user's id (Graph's principalId); empty for an admin consent.")
    client_id = models.CharField(max_length=255, help_text="The application's client id (its service principal's appId).")
    client_object_id = models.CharField(max_length=255, help_text="The application's service principal (Graph's clientId).")
    app_name = models.CharField(max_length=255, blank=True)
    resource_object_id = models.CharField(max_length=255, blank=True, help_text="The API's service principal (Graph's resourceId).")
    resource = models.CharField(max_length=255, blank=True, help_text="The API's display name.")
    scopes = models.JSONField(default=list, help_text="Each named with its API, as tokens' scopes are.")
    first_seen = models.DateTimeField(null=True)
    last_seen = models.DateTimeField(null=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "grant_id"], name="delegated_grant_once")]
        indexes = [models.Index(fields=["tenant", "user_key", "client_id"], name="delegated_grant_token")]


class ApiKey(models.Model):
    """A tenant's key for /api/v1/. Only a hash is kept: the key is shown once, when made."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=12, unique=True, help_text="The key's first characters, to find and recognise it.")
    key_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    may_revoke = models.BooleanField(default=False, help_text="May ask for and approve the revocation of grants (POST /api/v1/revocations/).")

    class Meta:
        verbose_name = "API key"

    def __str__(self):
        return f"{self.prefix}… ({self.tenant})"


def _emails(value: str) -> None:
    for address in (a.strip() for a in value.split(",")):
        if address:
            validate_email(address)


class AlertRule(models.Model):
    """A condition a tenant wants to hear of within minutes, and where to say it."""

    class Kind(models.TextChoices):
        RISKY_GRANT = "risky_grant", "a new grant at or above a risk level"
        MANY_USERS = "many_users", "an application reaching a number of users"
        ADMIN_CONSENT = "admin_consent", "an admin consent given"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="alert_rules")
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    min_risk = models.PositiveSmallIntegerField(choices=Risk.choices, default=Risk.HIGH, help_text="For new grants: this level or above.")
    min_users = models.PositiveIntegerField(default=50, validators=[MinValueValidator(1)], help_text="For applications: this many users or more.")
    webhook_url = models.URLField(blank=True, help_text="POSTed a JSON body signed in X-Ballast-Signature (sha256=HMAC of the body).")
    webhook_secret = models.CharField(max_length=200, blank=True, help_text="The HMAC key the receiver checks the signature with.")
    emails = models.CharField(max_length=500, blank=True, validators=[_emails], help_text="Comma-separated addresses (Django's mail settings).")
    active = models.BooleanField(default=True)
    evaluated_at = models.DateTimeField(
        null=True, blank=True, editable=False,
        help_text="When a run last evaluated it. A rule's first evaluation records what already holds as known, without delivering it.",
    )

    class Meta:
        constraints = [models.CheckConstraint(condition=~models.Q(webhook_url="", emails=""), name="alert_rule_has_a_channel")]

    def __str__(self):
        return f"{self.name} ({self.tenant})"


class Alert(models.Model):
    """A condition a rule raised, once: its key is unique per rule."""

    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="alerts")
    key = models.CharField(max_length=100)
    subject = models.CharField(max_length=300)
    facts = models.JSONField(default=dict)
    run = models.ForeignKey("SyncRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    baseline = models.BooleanField(default=False, help_text="Found by the tenant's first full read: known, not delivered.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        constraints = [models.UniqueConstraint(fields=["rule", "key"], name="alert_once_per_condition")]

    def __str__(self):
        return self.subject


class AlertDelivery(models.Model):
    class Channel(models.TextChoices):
        WEBHOOK = "webhook"
        EMAIL = "email", "e-mail"

    class Status(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        FAILED = "failed", "failed (no more tries)"

    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="deliveries")
    channel = models.CharField(max_length=10, choices=Channel.choices)
    target = models.CharField(max_length=500)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    last_result = models.CharField(max_length=300, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "alert deliveries"
        ordering = ["-id"]

    def __str__(self):
        return f"{self.get_channel_display()} of alert {self.alert_id}"


class Revocation(models.Model):
    """A request to revoke grants at the provider: what (an application's grants, of one user or
    all), who asked and who approved, the run that revoked them, and how it went. Its items say
    each grant's outcome and the provider's answer. Kept for the audit: never deleted in the admin."""

    class State(models.TextChoices):
        PENDING = "pending", "waiting for approval"
        APPROVED = "approved", "approved: revoking"
        DONE = "done", "revoked, and checked gone"
        INCOMPLETE = "incomplete", "some grants failed or are still listed"
        FAILED = "failed", "failed"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="revocations")
    client_id = models.CharField(max_length=255, help_text="The application whose grants are revoked.")
    user_email = models.CharField(max_length=320, blank=True, help_text="One user's grant only. Empty: every user's.")
    unused_days = models.PositiveIntegerField(
        null=True, blank=True, help_text="Only grants not used for this many days (by the provider's feed). Empty: every grant.",
    )
    requested_by = models.CharField(max_length=150, help_text="Who asked: a user name, or an API key's prefix.")
    requested_at = models.DateTimeField(auto_now_add=True)
    approved_by = models.CharField(max_length=150, blank=True)
    approved_at = models.DateTimeField(null=True, blank=True)
    state = models.CharField(max_length=12, choices=State.choices, default=State.PENDING, db_index=True)
    run = models.OneToOneField(SyncRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="revocation")
    outcome = models.TextField(blank=True, help_text="How it went, in words: counts, and the grants still listed or failed.")

    class Meta:
        ordering = ["-id"]

    def __str__(self):
        return f"revocation {self.pk}: {self.client_id}" + (f" for {self.user_email}" if self.user_email else " for every user")

    def outcome_counts(self) -> dict[str, int]:
        """Its grants counted by outcome, every outcome named (0 where none), in one query."""
        counted = dict(self.items.order_by().values_list("outcome").annotate(n=models.Count("id")))
        return {outcome: counted.get(outcome, 0) for outcome in RevocationItem.Outcome.values}


class RevocationItem(models.Model):
    """One grant a revocation names, as it stood when asked for, and what became of it."""

    class Outcome(models.TextChoices):
        PENDING = "pending", "not tried yet"
        REVOKED = "revoked", "revoked"
        GONE = "gone", "already gone (404)"
        FAILED = "failed", "failed"
        STILL_LISTED = "still_listed", "still listed after revoking"

    revocation = models.ForeignKey(Revocation, on_delete=models.CASCADE, related_name="items")
    token = models.ForeignKey(Token, on_delete=models.CASCADE, related_name="revocation_items")
    user_key = models.CharField(max_length=320, help_text="The user as the provider's call names them.")
    scopes = models.JSONField(default=list, help_text="What the grant held when the revocation was asked for.")
    outcome = models.CharField(max_length=12, choices=Outcome.choices, default=Outcome.PENDING, db_index=True)
    answer = models.CharField(max_length=300, blank=True, help_text="The provider's answer.")
    done_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]

    def __str__(self):
        return f"{self.user_key}: {self.get_outcome_display()}"
