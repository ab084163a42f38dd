"""Ballast settings: the only module that reads the environment.

Every variable is listed and explained in .env.example. A missing or malformed
value stops start-up with one line naming the variable and what it expects.
"""

import os
import tempfile
import warnings
from pathlib import Path
from urllib.parse import urlsplit

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# Variables set in the environment win over the file's. Production's units read none (ENV_FILE
# empty): a clone's local .env, made by `make` for the demo, must never reach a production process.
_ENV_FILE = os.environ.get("ENV_FILE", str(BASE_DIR / ".env"))
if _ENV_FILE:
    environ.Env.read_env(_ENV_FILE)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _bad(name: str, expects: str, shown: str | None = None) -> SystemExit:
    got = f" (got {shown!r})" if shown is not None else ""
    return SystemExit(f"Ballast configuration error: {name} must be {expects}{got}.")


def _bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    if raw.strip().lower() in _TRUE:
        return True
    if raw.strip().lower() in _FALSE:
        return False
    raise _bad(name, "true or false", raw)


def _number(name: str, default, minimum, cast=int):
    """A whole number (cast=int) or a number (cast=float) no smaller than minimum."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    expects = f"{'a whole number' if cast is int else 'a number'} >= {minimum}"
    try:
        value = cast(raw)
    except ValueError:
        raise _bad(name, expects, raw) from None
    if value < minimum:
        raise _bad(name, expects, raw)
    return value


def _int(name: str, default: int, minimum: int = 0) -> int:
    return _number(name, default, minimum, int)


def _float(name: str, default: float, minimum: float = 0.0) -> float:
    return _number(name, default, minimum, float)


def _choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = os.environ.get(name, default)
    if value not in choices:
        raise _bad(name, "one of " + ", ".join(choices), value)
    return value


def _database(name: str, default: str) -> dict:
    """Parse a database URL; never echo it back (it may hold a password)."""
    raw = os.environ.get(name, default)
    scheme = urlsplit(raw).scheme
    expects = "a database URL such as postgres://USER@HOST:5432/NAME or sqlite:///PATH"
    if scheme not in {"postgres", "postgresql", "pgsql", "sqlite"}:
        raise _bad(name, expects + f", not a {scheme or 'scheme-less'} URL")
    try:
        config = env.db_url_config(raw)
    except Exception:  # django-environ raises several types for bad URLs
        raise _bad(name, expects) from None
    if not config.get("NAME"):
        raise _bad(name, expects + " with a database name")
    return config


DEBUG = _bool("DEBUG", False)
SECRET_KEY = os.environ.get("SECRET_KEY") or ""
if not SECRET_KEY:
    if not DEBUG:  # a public key signs sessions anyone could forge
        raise SystemExit(
            "Ballast configuration error: SECRET_KEY must be set when DEBUG is off; make one with "
            "python3 -c 'import secrets; print(secrets.token_urlsafe(50))' (`make demo` writes one to .env)."
        )
    SECRET_KEY = "django-insecure-ballast-development-key"


def _fernet_keys(name: str) -> list[str]:
    """Fernet keys, comma-separated: the first encrypts, all decrypt (syncapp/encryption.py)."""
    from cryptography.fernet import Fernet

    keys = [k.strip() for k in os.environ.get(name, "").split(",") if k.strip()]
    for n, key in enumerate(keys, 1):
        try:
            Fernet(key)
        except ValueError:
            raise _bad(name, "Fernet keys separated by commas (make one with python3 -c 'from cryptography.fernet import Fernet; "
                       "print(Fernet.generate_key().decode())')", f"key {n} is not one") from None
    return keys


# Provider secrets at rest (a tenant's client_secret, access_token): encrypted under the first of
# these keys, read with any of them. Empty: stored as they are (`check --deploy` warns).
BALLAST_SECRETS_KEYS = _fernet_keys("SECRETS_KEYS")

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# HTTPS, by default: production sits behind a TLS proxy. The local .env `make` writes turns these
# off for the demo on plain HTTP; `manage.py check --deploy` warns about each one that is off.
SECURE_SSL_REDIRECT = _bool("SECURE_SSL_REDIRECT", True)
SECURE_HSTS_SECONDS = _int("SECURE_HSTS_SECONDS", 31_536_000)  # a year: browsers refuse plain HTTP for it
SECURE_HSTS_INCLUDE_SUBDOMAINS = _bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = _bool("SECURE_HSTS_PRELOAD", True)
SESSION_COOKIE_SECURE = _bool("SESSION_COOKIE_SECURE", True)
CSRF_COOKIE_SECURE = _bool("CSRF_COOKIE_SECURE", True)


def _proxy_ssl_header(name: str) -> tuple[str, str] | None:
    """'X-Forwarded-Proto: https' → Django's ('HTTP_X_FORWARDED_PROTO', 'https'); unset: none is
    believed (set it only when the proxy in front sets that header and strips the client's)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    header, colon, value = raw.partition(":")
    if not colon or not header.strip() or not value.strip():
        raise _bad(name, "a header and the value it has over HTTPS, such as 'X-Forwarded-Proto: https'", raw)
    return "HTTP_" + header.strip().upper().replace("-", "_"), value.strip()


SECURE_PROXY_SSL_HEADER = _proxy_ssl_header("SECURE_PROXY_SSL_HEADER")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_q",
    "django_prometheus",
    "monitoring",
    "syncapp",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "monitoring.ratelimit.middleware.RateLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Static files from STATIC_ROOT (after `collectstatic`) by the web process itself: no
    # separate file server needed behind gunicorn or uvicorn.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "project.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "project.wsgi.application"

# --- Database -------------------------------------------------------------
_db = _database("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}")
if _db["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets readers run beside the writer; IMMEDIATE takes the write lock at
    # BEGIN so concurrent writers queue on the busy timeout instead of failing.
    _db["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL",
        "transaction_mode": "IMMEDIATE",
        "timeout": _float("SQLITE_BUSY_TIMEOUT_S", 30.0, minimum=0.1),
    }
else:
    _db["CONN_MAX_AGE"] = _int("DB_CONN_MAX_AGE", 0)
    _db["CONN_HEALTH_CHECKS"] = True
    if _bool("DB_POOL", False):
        # Django's psycopg pool is not fork-safe: monitoring.apps forgets the
        # inherited pools in forked children; the README recommends leaving
        # DB_POOL off for `qcluster`.
        _db["CONN_MAX_AGE"] = 0
        _db.setdefault("OPTIONS", {})["pool"] = {
            "min_size": _int("DB_POOL_MIN_SIZE", 1),
            "max_size": _int("DB_POOL_MAX_SIZE", 10, minimum=1),
        }
# django-prometheus's wrappers of the same backends count queries and errors.
_db["ENGINE"] = _db["ENGINE"].replace("django.db.backends.", "django_prometheus.db.backends.")
DATABASES = {"default": _db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache and broker -----------------------------------------------------
REDIS_URL = os.environ.get("REDIS_URL") or None
if REDIS_URL and urlsplit(REDIS_URL).scheme not in {"redis", "rediss", "unix"}:
    raise _bad("REDIS_URL", "a URL such as redis://127.0.0.1:6379/0")

if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django_prometheus.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    # A shared cache (not LocMem): cluster status and, later, rate limits must
    # be visible to every process. The table is made by syncapp's migration.
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "ballast_cache"}}

_q_timeout = _int("Q_TIMEOUT", 3600, minimum=1)
Q_CLUSTER = {
    "name": "ballast",
    "workers": _int("Q_WORKERS", 2, minimum=1),
    "timeout": _q_timeout,
    # A task running longer than `retry` is delivered again: keep retry > timeout.
    "retry": _q_timeout + 60,
    "max_attempts": 1,
    "ack_failures": True,
    "save_limit": 250,
    "catch_up": False,
    "label": "Task queue",
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"
    Q_CLUSTER["poll"] = _float("Q_POLL_S", 0.5, minimum=0.05)

# --- Tenancy: quotas, the allocation ledger --------------------------------
# monitoring reaches the tenant model through this setting, as contrib.auth reaches AUTH_USER_MODEL.
BALLAST_TENANT_MODEL = "syncapp.Tenant"
BALLAST_TENANT_SLUG_FIELD = "slug"
BALLAST_RUN_MODEL = "syncapp.SyncRun"  # for `resources report` (needs status and queued_at)
BALLAST_TENANT_SCHEDULE_WORDS = "syncapp.schedules.schedule_words"  # the dashboard's tenant schedules
BALLAST_RUN_ETA_WORDS = "syncapp.progress.run_eta_words"  # the dashboard's ETA of a run, its steps to come included
BALLAST_METRICS_REFRESH = ["syncapp.schedules.observe_changes_lag"]  # figures /metrics reads at scrape time
BALLAST_QUOTA_DEFAULTS = {
    "max_concurrent_runs": _int("QUOTA_MAX_CONCURRENT_RUNS", 1, minimum=1),
    "max_concurrency": _int("QUOTA_MAX_CONCURRENCY", 32, minimum=1),
    "max_memory_mb": _int("QUOTA_MAX_MEMORY_MB", 1024, minimum=16),
    "requests_per_minute": _int("QUOTA_REQUESTS_PER_MINUTE", 120, minimum=1),
    "burst": _int("QUOTA_BURST", 20),
    "runs_per_day": _int("QUOTA_RUNS_PER_DAY", 96, minimum=1),
    "provider_calls_per_second": _float("QUOTA_PROVIDER_CALLS_PER_SECOND", None, minimum=0.1),
}
# Cluster-wide limits, enforced by the ledger across every process and machine sharing the database.
BALLAST_LEDGER_LIMITS = {"run_slot": _int("MAX_CONCURRENT_RUNS", 4, minimum=1)}
BALLAST_HEARTBEAT_S = _float("HEARTBEAT_S", 10.0, minimum=0.5)
# /metrics answers everyone unless this is set; then only `Authorization: Bearer <METRICS_TOKEN>`.
BALLAST_METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
BALLAST_HOLDER_TIMEOUT_S = _float("HOLDER_TIMEOUT_S", 300.0, minimum=1.0)
BALLAST_PRIORITY_AGING_S = _float("PRIORITY_AGING_S", 60.0, minimum=1.0)
# Request rate limits (monitoring.ratelimit.middleware): who the tenant of a request is, and what is exempt.
BALLAST_TENANT_RESOLVER = "syncapp.apikeys.resolve_tenant"
BALLAST_RATELIMIT_EXEMPT = env.list("RATELIMIT_EXEMPT", default=["/admin/", "/static/", "/healthz", "/readyz", "/metrics"])
BALLAST_RATELIMIT_FAIL_OPEN = _bool("RATELIMIT_FAIL_OPEN", True)
BALLAST_ANON_REQUESTS_PER_MINUTE = _int("ANON_REQUESTS_PER_MINUTE", 60, minimum=1)
# Addresses (or networks) of proxies whose X-Forwarded-For is believed; none by default.
BALLAST_TRUSTED_PROXIES = env.list("TRUSTED_PROXIES", default=[])

# --- Sync and its resource governor ---------------------------------------
BALLAST_INVALID_SAMPLES = _int("INVALID_SAMPLES", 5)
# A changes step reads the token feed from the tenant's cursor less this many seconds: the
# provider delivers some events late, and those already applied are skipped.
BALLAST_CHANGES_OVERLAP_S = _int("CHANGES_OVERLAP_S", 900, minimum=0)
# Directory exports (GAM CSV, JSON lines) are read this many bytes at a time: memory stays flat.
BALLAST_FILE_CHUNK_BYTES = _int("FILE_CHUNK_BYTES", 2**20, minimum=4096)
# An export larger than this once decompressed is refused (a small .gz can expand without end),
# and a line longer than LINE_MAX_BYTES is an invalid row, never held whole.
BALLAST_FILE_MAX_BYTES = _int("FILE_MAX_BYTES", 8 * 2**30, minimum=1)
BALLAST_LINE_MAX_BYTES = _int("LINE_MAX_BYTES", 2**20, minimum=1024)
# The accidental-delete guard: a whole read that would mark more than this percent of a tenant's
# users deleted or tokens revoked, and at least DELETE_GUARD_MIN_ROWS, holds them for a person.
BALLAST_DELETE_GUARD_PERCENT = _float("DELETE_GUARD_PERCENT", 10.0, minimum=0.0)
BALLAST_DELETE_GUARD_MIN_ROWS = _int("DELETE_GUARD_MIN_ROWS", 50, minimum=1)
# A revocation request needs another person's approval than its requester's (a second pair of eyes).
BALLAST_REVOCATION_SECOND_APPROVER = _bool("REVOCATION_SECOND_APPROVER", False)
# An application held by this many users or more has its risk raised a level (syncapp/risk.py).
BALLAST_RISK_MANY_USERS = _int("RISK_MANY_USERS", 100, minimum=1)
# Where files uploaded for an import wait for their run (which the cluster carries out: keep it
# on a disk the clusters see). Each goes when its run ends.
# Uploads up to 10 MB are held in memory; larger ones Django streams to a temporary file.
FILE_UPLOAD_MAX_MEMORY_SIZE = 10 * 2**20
# Where a tenant's credentials_file may be (syncapp/providers/credentials.py): a path outside it, a
# symlink leading out, or a file others may read is refused naming the key.
BALLAST_PROVIDER_CREDENTIALS_DIR = Path(os.environ.get("PROVIDER_CREDENTIALS_DIR") or BASE_DIR / "credentials")
BALLAST_IMPORT_DIR = Path(os.environ.get("IMPORT_DIR") or Path(tempfile.gettempdir()) / "ballast-imports")
BALLAST_SYNC_PROFILE = _choice(
    "SYNC_PROFILE", "production", ("production", "development", "background", "moderate", "fast")
)
BALLAST_SAMPLE_INTERVAL_S = _float("SAMPLE_INTERVAL_S", 0.5, minimum=0.05)
# Log lines for the same condition of a route (a CPU hold, a concurrency change…): at most one per this many seconds.
BALLAST_LOG_REPEAT_S = _float("LOG_REPEAT_S", 10.0)
# Resource status of /readyz: warning and critical thresholds, percent.
BALLAST_MEMORY_WARNING_PERCENT = _float("MEMORY_WARNING_THRESHOLD", 70.0, minimum=1.0)
BALLAST_MEMORY_CRITICAL_PERCENT = _float("MEMORY_CRITICAL_THRESHOLD", 85.0, minimum=1.0)
# Leak checks in a worker every N minutes (tracemalloc stays on in that worker); 0: off.
BALLAST_LEAK_CHECK_MINUTES = _int("LEAK_CHECK_MINUTES", 0)
BALLAST_CGROUP_ROOT = os.environ.get("CGROUP_ROOT", "/sys/fs/cgroup")
# Environment overrides of every route's policy (only the variables that are set).
_rss_mb = _float("MAX_RSS_USAGE_MB", None, minimum=1) or _float("MAX_HEAP_USAGE_MB", None, minimum=1)
_delay_ms = _int("BATCH_DELAY_MS", None)
_percent = {"minimum": 1.0}
BALLAST_GOVERNOR = {
    key: value
    for key, value in {
        "parallel": _bool("ENABLE_PARALLEL_SYNC", None),
        "max_concurrency": _int("MAX_CONCURRENCY", None, minimum=1),
        "max_cpu_percent": _float("MAX_CPU_PERCENT", None, **_percent),
        "cpu_floor_percent": _float("CPU_FLOOR_PERCENT", None, **_percent),
        "max_memory_percent": _float("MAX_MEMORY_PERCENT", None, **_percent),
        "rss_limit_mb": _rss_mb,
        "emergency_rss_mb": _float("EMERGENCY_THRESHOLD_MB", None, minimum=1),
        "batch_size": _int("BATCH_SIZE", None, minimum=1),
        "batch_delay_s": _delay_ms / 1000 if _delay_ms is not None else None,
        "max_wait_s": _float("MAX_WAIT_S", None),
        "collect_garbage": _bool("GC_UNDER_PRESSURE", None),
        "malloc_trim": _bool("MALLOC_TRIM", None),
    }.items()
    if value is not None
}
for _name, _key in (("MAX_CPU_PERCENT", "max_cpu_percent"), ("CPU_FLOOR_PERCENT", "cpu_floor_percent"), ("MAX_MEMORY_PERCENT", "max_memory_percent")):
    if BALLAST_GOVERNOR.get(_key, 0) > 100:
        raise _bad(_name, "a percentage from 1 to 100", os.environ[_name])

# --- The rest of Django ---------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = os.environ.get("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True
FORMAT_MODULE_PATH = ["project.formats"]  # timestamps with seconds in the admin

STATIC_URL = "static/"
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT") or BASE_DIR / "staticfiles")
# WhiteNoise serves STATIC_ROOT once `collectstatic` filled it, and the apps' own static folders
# before that (the demo, the tests): an empty STATIC_ROOT is expected then, not worth a warning.
WHITENOISE_USE_FINDERS = True
warnings.filterwarnings("ignore", message="No directory at: ", category=UserWarning)

LOG_LEVEL = _choice("LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR"))
LOG_FORMAT = _choice("LOG_FORMAT", "text", ("text", "json"))
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "monitoring.logs.JsonLines"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "loggers": {
        "syncapp": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
        "monitoring": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
        "django_q": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
        # Django's own: every 500's traceback (django.request), in the same format as ours.
        "django": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
        # A request for a host not in ALLOWED_HOSTS (scanners send them all day): one warning line, not an error's traceback.
        "django.security.DisallowedHost": {"handlers": ["console"], "level": LOG_LEVEL, "filters": ["one_warning_line"], "propagate": False},
    },
    "filters": {"one_warning_line": {"()": "monitoring.logs.OneWarningLine"}},
}
