"""Aerostack settings: one module, driven by the environment (see README's configuration table).

With no configuration at all this is the embedded setup: SQLite in WAL mode and a secret key under
``var/``, an in-process cache, static files served by the app. ``DATABASE_URL`` and ``REDIS_URL`` switch to
the scale-out setup where every node shares the database and the cache.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

from aerostack.environ import (
    database_from_url,
    email_from_url,
    env_bool,
    env_int,
    env_list,
    env_rate,
    env_str,
    env_url,
    parse_rate,
)
from aerostack.files import private_directory, private_sqlite_database
from aerostack.logs import SECURITY_LOGGERS

BASE_DIR = Path(__file__).resolve().parent.parent
_configured_data_dir = env_str("AEROSTACK_DATA_DIR")
DATA_DIR = Path(_configured_data_dir or BASE_DIR / "var")
# 0700, files in it 0600 (aerostack/files.py): the database and the secret key are for our eyes only.
private_directory(DATA_DIR, tighten_existing=not _configured_data_dir)

DEBUG = env_bool("DEBUG", False)


def _secret_key() -> str:
    """SECRET_KEY from the environment, else one generated once and kept in var/ readable by us only."""
    configured = env_str("SECRET_KEY")
    if configured:
        if len(configured) < 32:
            raise ImproperlyConfigured("SECRET_KEY must be at least 32 characters long")
        return configured
    path = DATA_DIR / "secret_key"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text(encoding="utf-8").strip()
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(secrets.token_urlsafe(50))
    return path.read_text(encoding="utf-8").strip()


SECRET_KEY = _secret_key()

PUBLIC_URL = env_url("PUBLIC_URL", schemes=("http", "https"))
if PUBLIC_URL:
    PUBLIC_URL = PUBLIC_URL.rstrip("/")
_public_host = urlsplit(PUBLIC_URL).hostname if PUBLIC_URL else None
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
if _public_host and _public_host not in ALLOWED_HOSTS:
    ALLOWED_HOSTS.append(_public_host)
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
if PUBLIC_URL:
    _origin = "{0.scheme}://{0.netloc}".format(urlsplit(PUBLIC_URL))
    if _origin not in CSRF_TRUSTED_ORIGINS:
        CSRF_TRUSTED_ORIGINS.append(_origin)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "aerostack",
    "workspaces",
    "tokens",
    "gateway",
    "api",
    "analytics",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "aerostack.middleware.ContentSecurityPolicyMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "aerostack.urls"
WSGI_APPLICATION = "aerostack.wsgi.application"

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
                "aerostack.context_processors.product",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL")
if DATABASE_URL:
    DATABASES = {
        "default": database_from_url(
            DATABASE_URL,
            # Per process. Every node's processes together must stay below PostgreSQL's max_connections.
            pool_max=env_int("DATABASE_POOL_MAX", 16, minimum=1, maximum=1000),
            pool_timeout=env_int("DATABASE_POOL_TIMEOUT_SECONDS", 10, minimum=1, maximum=300),
        )
    }
else:
    private_sqlite_database(DATA_DIR / "aerostack.sqlite3")
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": DATA_DIR / "aerostack.sqlite3",
            # Persistent connections: opening one costs ~1 ms plus the PRAGMAs, and closing one checkpoints
            # the WAL; per request that was most of the gateway's own time.
            "CONN_MAX_AGE": 600,
            "CONN_HEALTH_CHECKS": True,
            "OPTIONS": {
                # WAL lets readers run beside the one writer; IMMEDIATE takes the write lock at BEGIN so two
                # threads never deadlock upgrading a read lock; busy_timeout waits instead of failing.
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
                "init_command": (
                    "PRAGMA journal_mode=WAL;"
                    "PRAGMA synchronous=NORMAL;"
                    "PRAGMA busy_timeout=20000;"
                    "PRAGMA foreign_keys=ON;"
                ),
            },
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache: rate limits, gateway sessions, anything every node must agree on --------------------------------
REDIS_URL = env_url("REDIS_URL", schemes=("redis", "rediss", "unix"))
CACHE_KEY_PREFIX = env_str("CACHE_KEY_PREFIX", "aerostack") or "aerostack"
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "aerostack.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": CACHE_KEY_PREFIX,
            "TIMEOUT": 300,
        }
    }
else:
    # The embedded setup is one process (gunicorn with threads), so an in-process cache is shared by all
    # of its requests. Several processes need REDIS_URL: see README.
    CACHES = {
        "default": {
            "BACKEND": "aerostack.cache.LocalCache",  # Django's LocMemCache, one call's counting in one step
            "LOCATION": "aerostack",
            "KEY_PREFIX": CACHE_KEY_PREFIX,
            "TIMEOUT": 300,
            "OPTIONS": {"MAX_ENTRIES": 100_000},
        }
    }

# Rate limits count with the cache's atomic add + incr (django-ratelimit's fixed window). Every node must
# share the cache for the limit to hold across them: that is what REDIS_URL is for.
# If the cache is unreachable we refuse rather than let every request through unlimited.
RATELIMIT_FAIL_OPEN = False
RATELIMIT_VIEW = "aerostack.views.ratelimited"

# --- Accounts -----------------------------------------------------------------------------------------------
SIGNUP_OPEN = env_bool("SIGNUP_OPEN", True)
LOGIN_RATE = env_str("LOGIN_RATE", "10/m") or "10/m"
# Sign-up attempts per client IP (django-ratelimit's rate syntax): mass account creation and probing which
# emails have accounts are slowed down, a team signing up from one office is not.
SIGNUP_RATE = env_str("SIGNUP_RATE", "10/h") or "10/h"
for _name, _rate in (("LOGIN_RATE", LOGIN_RATE), ("SIGNUP_RATE", SIGNUP_RATE)):
    try:
        parse_rate(_rate)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{_name}: {exc}") from None
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "workspace_list"
LOGOUT_REDIRECT_URL = "login"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# Client IPs (for login and failed-auth throttling) are read from X-Forwarded-For only when the direct peer
# is one of these proxies; otherwise anyone could pick their own IP and escape the throttle.
try:
    TRUSTED_PROXIES = [ipaddress.ip_network(item, strict=False) for item in env_list("TRUSTED_PROXIES", [])]
except ValueError as exc:
    raise ImproperlyConfigured(f"TRUSTED_PROXIES: {exc}") from None

# --- Security -----------------------------------------------------------------------------------------------
_https = bool(PUBLIC_URL and PUBLIC_URL.startswith("https://"))
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", _https)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_HTTPONLY = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SECURE_HSTS_SECONDS = env_int("HSTS_SECONDS", 31_536_000 if _https else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = False
if env_bool("BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)

# --- Email: invites and password resets ---------------------------------------------------------------------
# EMAIL_URL (smtp://user:pass@host:587?tls=1) or the usual EMAIL_HOST & co.; with neither, messages go to the
# console (the `make run` output), so a fresh install works without a mail server.
_EMAIL_URL = env_str("EMAIL_URL")
_EMAIL_HOST = env_str("EMAIL_HOST")
if _EMAIL_URL and _EMAIL_HOST:
    raise ImproperlyConfigured("Set EMAIL_URL or EMAIL_HOST, not both")
if _EMAIL_URL:
    globals().update(email_from_url(_EMAIL_URL))
elif _EMAIL_HOST:
    EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    EMAIL_HOST = _EMAIL_HOST
    EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
    EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
    if EMAIL_USE_TLS and EMAIL_USE_SSL:
        raise ImproperlyConfigured("EMAIL_USE_TLS (STARTTLS) and EMAIL_USE_SSL exclude each other")
    EMAIL_PORT = env_int("EMAIL_PORT", 465 if EMAIL_USE_SSL else 587 if EMAIL_USE_TLS else 25, minimum=1)
    EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "") or ""
    EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "") or ""
    EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10, minimum=1)
else:
    EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Aerostack <aerostack@localhost>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
# Each request for a reset link sends an email: counted per client IP, successful or not.
PASSWORD_RESET_RATE = env_str("PASSWORD_RESET_RATE", "5/h") or "5/h"
PASSWORD_RESET_TIMEOUT = env_int("PASSWORD_RESET_TIMEOUT", 3 * 3600, minimum=60)

# --- Invites ------------------------------------------------------------------------------------------------
INVITE_EXPIRY_DAYS = env_int("INVITE_EXPIRY_DAYS", 7, minimum=1, maximum=90)
# Invites (and re-sends) a workspace may send in 24 hours, so the product cannot be used to send spam.
INVITES_PER_DAY = env_int("INVITES_PER_DAY", 50, minimum=1)

# --- Static files -------------------------------------------------------------------------------------------
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)
# Served by WhiteNoise straight from the source folders (no collectstatic step for `make run`).
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True
WHITENOISE_MAX_AGE = 3600

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
# --- REST API (/api/v1/, api/): per-key requests a minute; the OpenAPI schema at /api/schema/ -----------
API_RATE_LIMIT = env_int("API_RATE_LIMIT", 600, minimum=1)
SPECTACULAR_SETTINGS = {
    "TITLE": "Aerostack API",
    "DESCRIPTION": "Workspaces, tokens, members, servers and the audit log of an Aerostack gateway. "
    "Authenticate with a personal API key: `Authorization: Bearer ak_...`.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "PREPROCESSING_HOOKS": ["api.base.only_api_v1"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}

# --- Logging: plain lines to stderr; tokens are never logged (only their id or hint) ----------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    # Every record the handler writes loses the secret pieces of the upstream URLs this process decrypted
    # (gateway.secret_urls): the last line of defence behind messages that name servers by slug.
    "handlers": {
        "stderr": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["secret_urls"]}
    },
    "root": {"handlers": ["stderr"], "level": env_str("LOG_LEVEL", "INFO") or "INFO"},
    # Expected refusals (403, 404, CSRF, 429, bad Host) log one line; 5xx keep their traceback.
    "filters": {
        "refusals": {"()": "aerostack.logs.ExpectedRefusalsWithoutTraceback"},
        "secret_urls": {"()": "gateway.secret_urls.ScrubSecretUrls"},
    },
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        **{name: {"filters": ["refusals"]} for name in ("django.request", *SECURITY_LOGGERS)},
    },
}
CSRF_FAILURE_VIEW = "aerostack.views.csrf_failure"

# --- Gateway ------------------------------------------------------------------------------------------------
GATEWAY_RATE_LIMIT_DEFAULT = env_int("GATEWAY_RATE_LIMIT", 120, minimum=1)
GATEWAY_MAX_BODY_BYTES = env_int("GATEWAY_MAX_BODY_BYTES", 1024 * 1024, minimum=1024)
# Failed authentications per client IP before the gateway answers 429 for a while (GitLab does the same).
GATEWAY_AUTH_FAILURE_LIMIT = env_rate("GATEWAY_AUTH_FAILURE_RATE", "30/3m")
GATEWAY_SESSION_TTL_SECONDS = env_int("GATEWAY_SESSION_TTL_SECONDS", 24 * 3600, minimum=60)
GATEWAY_TOOLS_CACHE_SECONDS = env_int("GATEWAY_TOOLS_CACHE_SECONDS", 30, minimum=0)
GATEWAY_ALLOWED_ORIGINS = env_list("GATEWAY_ALLOWED_ORIGINS", [])
# Fairness and caps (docs/reliability.md): how long tools/list waits for a workspace's upstreams; when an
# upstream whose lists keep failing is skipped, and for how long; what one upstream reply and one upstream's
# tool list may weigh; how many tools/call may be in flight at once per workspace and per token (all nodes).
GATEWAY_LIST_DEADLINE_SECONDS = env_int("GATEWAY_LIST_DEADLINE_SECONDS", 10, minimum=1, maximum=600)
GATEWAY_BREAKER_FAILURES = env_int("GATEWAY_BREAKER_FAILURES", 2, minimum=1)
GATEWAY_BREAKER_BACKOFF_SECONDS = env_int("GATEWAY_BREAKER_BACKOFF_SECONDS", 30, minimum=1)
GATEWAY_BREAKER_MAX_BACKOFF_SECONDS = env_int("GATEWAY_BREAKER_MAX_BACKOFF_SECONDS", 600, minimum=1)
GATEWAY_MAX_UPSTREAM_REPLY_BYTES = env_int(
    "GATEWAY_MAX_UPSTREAM_REPLY_BYTES", 16 * 1024 * 1024, minimum=65536
)
GATEWAY_MAX_TOOLS_LIST_BYTES = env_int("GATEWAY_MAX_TOOLS_LIST_BYTES", 8 * 2**20, minimum=65536)
GATEWAY_MAX_TOOLS_PER_SERVER = env_int("GATEWAY_MAX_TOOLS_PER_SERVER", 2000, minimum=1)
GATEWAY_MAX_INFLIGHT_PER_WORKSPACE = env_int("GATEWAY_MAX_INFLIGHT_PER_WORKSPACE", 256, minimum=1)
GATEWAY_MAX_INFLIGHT_PER_TOKEN = env_int("GATEWAY_MAX_INFLIGHT_PER_TOKEN", 64, minimum=1)
# Client GET streams (gateway/live.py): served on the event loop, no thread each. A keep-alive comment every
# N seconds; the token and session checked again every M seconds (and at once on a revocation message); at
# most this many open streams per token (all nodes) and per process (under gunicorn's worker_connections).
GATEWAY_STREAM_KEEPALIVE_SECONDS = env_int("GATEWAY_STREAM_KEEPALIVE_SECONDS", 15, minimum=1, maximum=300)
GATEWAY_STREAM_RECHECK_SECONDS = env_int("GATEWAY_STREAM_RECHECK_SECONDS", 30, minimum=1, maximum=3600)
GATEWAY_MAX_STREAMS_PER_TOKEN = env_int("GATEWAY_MAX_STREAMS_PER_TOKEN", 16, minimum=1)
GATEWAY_MAX_STREAMS = env_int("GATEWAY_MAX_STREAMS", 3000, minimum=1)
# Upstream URLs on private, loopback or link-local addresses are refused (SSRF) unless this is on: a gateway
# on a laptop or in tests talks to servers on 127.0.0.1, so `make run` turns it on explicitly.
ALLOW_PRIVATE_UPSTREAMS = env_bool("ALLOW_PRIVATE_UPSTREAMS", False)
# Usage rows are written by a background thread in batches, off the request path (an INSERT per request
# costs ~0.8 ms on SQLite). Tests switch it to synchronous writes.
GATEWAY_USAGE_ASYNC = env_bool("GATEWAY_USAGE_ASYNC", True)
# Raw usage rows are kept this many days (`manage.py prune_usage`, from cron); the Analytics tab's hour
# rollups 400 days, its minute rollups 48 hours.
USAGE_RETENTION_DAYS = env_int("USAGE_RETENTION_DAYS", 90, minimum=1)
ENCRYPTION_KEYS = env_list("ENCRYPTION_KEYS", [])
# Active tokens may be kept in the shared cache (see tokens.services.token_authenticate): a gateway request
# then needs no database round trip, and revocation still reaches every node at once. Only with a shared
# cache: an in-process cache cannot hear of a revocation made by another process (manage.py, a worker).
TOKEN_CACHE_SECONDS = env_int("TOKEN_CACHE_SECONDS", 60 if REDIS_URL else 0, minimum=0, maximum=3600)
if TOKEN_CACHE_SECONDS and not REDIS_URL:
    raise ImproperlyConfigured("TOKEN_CACHE_SECONDS needs REDIS_URL: revocations must reach every process")
# Active tokens one member may hold in one workspace (token_create, token_rotate): a per-token rate limit must
# not be multiplied at will by minting more tokens.
TOKENS_PER_MEMBER_MAX = env_int("TOKENS_PER_MEMBER_MAX", 50, minimum=1)

# --- Serving (aerostack/serving.py, docs/architecture.md) ---------------------------------------------------
# Connections live in the event loop; requests run in bounded pools of reusable threads. A gateway thread is
# held only while its request runs (for a tools/call: while the upstream works), so the bound is the number
# of gateway requests in flight per process; beyond it a request gets a JSON-RPC error at once (503).
SERVER_GATEWAY_THREADS = env_int("SERVER_GATEWAY_THREADS", 256, minimum=1, maximum=4096)
# Dashboard, API and admin requests are short: a few threads, and a bounded queue in front of them.
SERVER_DASHBOARD_THREADS = env_int("SERVER_DASHBOARD_THREADS", 8, minimum=1, maximum=256)
SERVER_DASHBOARD_QUEUE = env_int("SERVER_DASHBOARD_QUEUE", 128, minimum=0, maximum=100_000)
# Largest dashboard request body read into memory (Django's own DATA_UPLOAD_MAX_MEMORY_SIZE still applies).
SERVER_DASHBOARD_MAX_BODY_BYTES = env_int("SERVER_DASHBOARD_MAX_BODY_BYTES", 10 * 1024 * 1024, minimum=1024)
# Request bodies are read into memory before a thread runs them: all of them together (being read or
# served) may take at most this much; a request beyond it gets its lane's busy answer (503).
SERVER_MAX_BUFFERED_BODY_BYTES = env_int(
    "SERVER_MAX_BUFFERED_BODY_BYTES", 128 * 1024 * 1024, minimum=1024 * 1024
)
