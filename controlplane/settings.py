"""Switchyard control plane settings, all read from the environment.

Embedded default (nothing set): SQLite under var/, in-process channel layer,
filesystem Celery broker. Production: DATABASE_URL and REDIS_URL.
"""
import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent


def env(name, default=""):
    return os.environ.get(name, default)


def env_bool(name, default=False):
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def env_list(name, default=""):
    return [item.strip() for item in env(name, default).split(",") if item.strip()]


VAR_DIR = Path(env("SWITCHYARD_VAR_DIR", str(BASE_DIR / "var")))
VAR_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
VAR_DIR.chmod(0o700)  # holds the database (sessions), the secret key and the broker's task files

DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env("SECRET_KEY")
if not SECRET_KEY:
    # Embedded mode: a per-installation key kept beside the database.
    key_file = VAR_DIR / "secret_key"
    if not key_file.exists():
        import secrets
        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    SECRET_KEY = key_file.read_text().strip()
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost,[::1],testserver")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "django_celery_beat",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "controlplane.tenancy",
    "controlplane.proxy",
    "controlplane.publishing",
    "controlplane.audit",
    "controlplane.alerts",
    "controlplane.health",
    "controlplane.certs",
    "controlplane.api",
    "controlplane.dashboard",
    "controlplane.telemetry",
    "controlplane.diagnostics",
    "controlplane.configio",
    "controlplane.acme",
    "controlplane.accounts",
    # django-allauth: its mfa part (TOTP, recovery codes) behind the dashboard's own pages
    "allauth",
    "allauth.account",
    "allauth.mfa",
    "allauth.socialaccount",  # single sign-on (SWITCHYARD_OIDC_*)
    "allauth.socialaccount.providers.openid_connect",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "controlplane.dashboard.twofactor.RequireTwoFactorMiddleware",  # SWITCHYARD_MFA_REQUIRED
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "controlplane.unavailable.DependencyUnavailableMiddleware",  # database/broker down: 503, not 500
]

ROOT_URLCONF = "controlplane.urls"
ASGI_APPLICATION = "controlplane.asgi.application"

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

DATABASE_URL = env("DATABASE_URL")
if DATABASE_URL:
    # No persistent connections: Daphne runs each request's sync code in a thread of its
    # own, so a per-thread persistent connection outlived its thread and 20 busy API
    # clients held over 70 connections ("too many clients"). Each request opens and closes
    # its own (a few ms on a LAN). A pool was tried: while PostgreSQL is down every request
    # waits out the pool's timeout, and after it is back the pool's reconnect backoff kept
    # answering 503. connect_timeout: a PostgreSQL that hangs is a 503 after seconds.
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=0)}
    DATABASES["default"].setdefault("OPTIONS", {})["connect_timeout"] = int(
        env("SWITCHYARD_DB_CONNECT_TIMEOUT", "5"))
else:
    SQLITE_PATH = Path(env("SWITCHYARD_SQLITE_PATH", str(VAR_DIR / "switchyard.sqlite3")))
    # Owner-only: the file holds sessions. SQLite gives its -wal/-shm/-journal files the
    # database file's mode; older installations' files are tightened here too.
    os.close(os.open(SQLITE_PATH, os.O_RDWR | os.O_CREAT, 0o600))
    for _f in (SQLITE_PATH, *(Path(f"{SQLITE_PATH}{suffix}") for suffix in ("-wal", "-shm", "-journal"))):
        if _f.exists():
            _f.chmod(0o600)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(SQLITE_PATH),
            # Several processes (Daphne, Celery) share the file: wait instead of failing.
            "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE",
                        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env("REDIS_URL")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # redis-py 8 reads with a 5 s socket timeout by default, exactly channels_redis's
            # 5 s BZPOPMIN: an idle consumer then dies of "Timeout reading" now and then.
            "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": 30}]},
        }
    }
    CELERY_BROKER_URL = REDIS_URL
    # A Redis that hangs must not hang the request that queues a task (or the worker's
    # reconnect) for minutes: fail after seconds and let the 503 handler answer.
    CELERY_BROKER_CONNECTION_TIMEOUT = 3
    CELERY_BROKER_TRANSPORT_OPTIONS = {"socket_timeout": 5, "socket_connect_timeout": 3,
                                       "max_retries": 2, "interval_start": 0, "interval_step": 0.5}
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CELERY_BROKER_URL = "filesystem://"
    # kombu's filesystem transport, writing each message whole (controlplane/brokerfs.py)
    CELERY_BROKER_TRANSPORT = "controlplane.brokerfs:Transport"
    _broker_dir = VAR_DIR / "celery-broker"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir),
        "data_folder_out": str(_broker_dir),
        "processed_folder": str(_broker_dir / "processed"),
        "store_processed": False,
        "control_folder": str(_broker_dir / "control"),
        # How often the worker looks for new task files (kombu's default is 1 s). Every
        # health-check round and alert delivery waits for this poll, and a round may wait
        # once per check interval, so 1 s would eat most of the 1 s of slack a killed
        # target has (unhealthy_threshold x interval + 1 s to leave the traffic). A listdir is cheap.
        "polling_interval": float(env("SWITCHYARD_BROKER_POLL_SECONDS", "0.1")),
    }
    for _d in (_broker_dir, _broker_dir / "processed", _broker_dir / "control"):
        _d.mkdir(parents=True, exist_ok=True)
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_BEAT_SCHEDULER = "controlplane.beat:DatabaseScheduler"
CELERY_TASK_IGNORE_RESULT = True
CELERY_TIMEZONE = "UTC"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "static"] if (BASE_DIR / "static").exists() else []

# Django's ModelBackend behind the login throttle: every sign-in path goes through it.
AUTHENTICATION_BACKENDS = ["controlplane.dashboard.throttle.ThrottledModelBackend"]
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
# Login throttling (dashboard and /admin/login/): after this many failures for one
# username (NFKC, casefolded) from one address within the window (seconds), further
# attempts are refused until it passes.
SWITCHYARD_LOGIN_MAX_FAILURES = int(env("SWITCHYARD_LOGIN_MAX_FAILURES", "5"))
SWITCHYARD_LOGIN_WINDOW_SECONDS = int(env("SWITCHYARD_LOGIN_WINDOW_SECONDS", "900"))
# Dashboard live view (/ws/live/): how often each connection reads node and health
# state from the database (group messages are only hints; embedded mode has none
# from other processes).
SWITCHYARD_LIVE_POLL_SECONDS = float(env("SWITCHYARD_LIVE_POLL_SECONDS", "1"))

SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG and env_bool("SWITCHYARD_HTTPS", False))
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"

# Content-Security-Policy (django-csp) on every page: the dashboard and the admin load
# scripts, styles and images from this origin only and run no inline code; the live
# socket and the tail stream are same-origin too ('self' covers ws:/wss: to this host).
# The API docs (drf-spectacular's Swagger UI and Redoc pages carry inline scripts and
# styles) are left out.
CONTENT_SECURITY_POLICY = {
    "EXCLUDE_URL_PREFIXES": ["/api/v1/docs/"],
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    # \u-escaped output: an error that echoes a client's lone surrogate stays valid JSON
    "UNICODE_JSON": False,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Switchyard API",
    "VERSION": "1.0.0",
    "DESCRIPTION": "Routes, pools, certificates, tenants and config versions of a Switchyard control plane. "
                   "Authenticate with `Authorization: Bearer <token>` or the dashboard session. "
                   "Any write may carry a change note in the `X-Change-Note` header.",
    # Swagger UI and Redoc from drf-spectacular-sidecar: the docs need no CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "SERVE_INCLUDE_SCHEMA": False,
}

# Switchyard
SWITCHYARD_ENCRYPTION_KEY = env("SWITCHYARD_ENCRYPTION_KEY")
# Coalescing window for config pushes: a burst of edits becomes one push.
SWITCHYARD_PUSH_COALESCE_SECONDS = float(env("SWITCHYARD_PUSH_COALESCE_SECONDS", "0.15"))
# Active health checks: probes in flight per pool round (bounded by the open-files limit).
SWITCHYARD_HEALTH_CONCURRENCY = int(env("SWITCHYARD_HEALTH_CONCURRENCY", "500"))
# Every data-plane sync consumer polls the newest config version number this often
# (seconds) and treats a change like a hint. In embedded mode the in-memory channel
# layer cannot carry hints from other processes (Celery, manage.py) by itself; they
# come through a datagram bridge (controlplane.publishing.localhints) that is
# at-most-once, so the poll stays on there as the fallback. With REDIS_URL hints
# travel through channels_redis, so the default is 0 (off).
SWITCHYARD_POLL_SECONDS = float(env("SWITCHYARD_POLL_SECONDS", "0" if REDIS_URL else "0.5"))

# Alerts: at most one target_down/target_up alert per target and state in this window.
SWITCHYARD_ALERT_DEBOUNCE_SECONDS = float(env("SWITCHYARD_ALERT_DEBOUNCE_SECONDS", "300"))
# Alert delivery: attempts per channel (backoff 10 s, 30 s, 90 s, ...) and the
# timeout of one webhook or SMTP attempt, in seconds.
SWITCHYARD_ALERT_MAX_ATTEMPTS = int(env("SWITCHYARD_ALERT_MAX_ATTEMPTS", "5"))
# Wait after the first failed delivery attempt, in seconds; each further wait is 3x the
# previous one (10 s, 30 s, 90 s, 270 s with the default). Tests make it short.
SWITCHYARD_ALERT_RETRY_BASE_SECONDS = float(env("SWITCHYARD_ALERT_RETRY_BASE_SECONDS", "10"))
SWITCHYARD_ALERT_TIMEOUT = float(env("SWITCHYARD_ALERT_TIMEOUT", "10"))
# Path to a PEM file of extra trusted roots (an operator's own CA) for certificate checks.
SWITCHYARD_CA_BUNDLE = env("SWITCHYARD_CA_BUNDLE", "")
# Automatic certificates (ACME). An empty directory URL turns ACME off: routes cannot ask for it.
SWITCHYARD_ACME_DIRECTORY = env("SWITCHYARD_ACME_DIRECTORY", "")
SWITCHYARD_ACME_EMAIL = env("SWITCHYARD_ACME_EMAIL", "")
SWITCHYARD_ACME_EAB_KID = env("SWITCHYARD_ACME_EAB_KID", "")
SWITCHYARD_ACME_EAB_HMAC = env("SWITCHYARD_ACME_EAB_HMAC", "")
SWITCHYARD_ACME_PROFILE = env("SWITCHYARD_ACME_PROFILE", "")
SWITCHYARD_ACME_CA_BUNDLE = env("SWITCHYARD_ACME_CA_BUNDLE", "")  # PEM file trusted for the directory's HTTPS
SWITCHYARD_ACME_RETRY_BASE_SECONDS = float(env("SWITCHYARD_ACME_RETRY_BASE_SECONDS", "3600"))
SWITCHYARD_ACME_PROPAGATION_SECONDS = float(env("SWITCHYARD_ACME_PROPAGATION_SECONDS", "60"))
SWITCHYARD_ACME_VALIDATION_SECONDS = float(env("SWITCHYARD_ACME_VALIDATION_SECONDS", "120"))
# The challenge a route gets unless it names one: http-01, tls-alpn-01 or dns-01.
SWITCHYARD_ACME_CHALLENGE = env("SWITCHYARD_ACME_CHALLENGE", "http-01")
# DNS-01 through RFC 2136 dynamic updates: the server (host or host:port), the zone it is
# authoritative for, and the TSIG key (name, base64 secret, algorithm) that signs the updates.
SWITCHYARD_ACME_DNS_SERVER = env("SWITCHYARD_ACME_DNS_SERVER", "")
SWITCHYARD_ACME_DNS_ZONE = env("SWITCHYARD_ACME_DNS_ZONE", "")
SWITCHYARD_ACME_DNS_TSIG_NAME = env("SWITCHYARD_ACME_DNS_TSIG_NAME", "")
SWITCHYARD_ACME_DNS_TSIG_SECRET = env("SWITCHYARD_ACME_DNS_TSIG_SECRET", "")
SWITCHYARD_ACME_DNS_TSIG_ALGORITHM = env("SWITCHYARD_ACME_DNS_TSIG_ALGORITHM", "hmac-sha256")
# On-demand TLS (delegations with on-demand issuance on): before ordering a name, GET
# <ask>?domain=<name>; only a 2xx within the timeout (seconds) allows the order. Empty: no ask.
SWITCHYARD_ACME_ON_DEMAND_ASK = env("SWITCHYARD_ACME_ON_DEMAND_ASK", "")
SWITCHYARD_ACME_ON_DEMAND_ASK_TIMEOUT = float(env("SWITCHYARD_ACME_ON_DEMAND_ASK_TIMEOUT", "3"))
# Traffic telemetry: per-minute rows older than this are deleted hourly by Celery beat.
SWITCHYARD_TRAFFIC_RETENTION_HOURS = float(env("SWITCHYARD_TRAFFIC_RETENTION_HOURS", "48"))
SWITCHYARD_HEALTH_HISTORY_DAYS = float(env("SWITCHYARD_HEALTH_HISTORY_DAYS", "30"))
# Never a tenant's upstream target, checked on save: the control plane's own
# listener and the local node's listeners (the Procfile's variables and defaults).
# Every node also refuses its own listeners and its control plane on connect.
SWITCHYARD_RESERVED_ENDPOINTS = [
    f"[{env('SWITCHYARD_WEB_BIND', '127.0.0.1')}]:{env('SWITCHYARD_WEB_PORT', '8000')}",
    env("SWITCHYARD_NODE_HTTP", "127.0.0.1:8080"), env("SWITCHYARD_NODE_HTTPS", "127.0.0.1:8443"),
    env("SWITCHYARD_NODE_ADMIN", "127.0.0.1:9901"),
    *filter(None, env("SWITCHYARD_RESERVED_EXTRA", "").split(",")),
]

EMAIL_BACKEND = env("EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = env("EMAIL_HOST", "127.0.0.1")
EMAIL_PORT = int(env("EMAIL_PORT", "25"))
EMAIL_HOST_USER = env("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", "switchyard@localhost")
# Accounts: how long an invitation link works (days); a password reset link (seconds).
SWITCHYARD_INVITATION_DAYS = float(env("SWITCHYARD_INVITATION_DAYS", "7"))
PASSWORD_RESET_TIMEOUT = int(env("SWITCHYARD_PASSWORD_RESET_SECONDS", str(3 * 24 * 3600)))
# Two-factor (TOTP with recovery codes, django-allauth's mfa): optional per user;
# "staff" or "all" makes it mandatory for platform staff or for everyone (they are sent
# to enrol before anything else). The TOTP secret is encrypted at rest.
SWITCHYARD_MFA_REQUIRED = env("SWITCHYARD_MFA_REQUIRED", "").strip().lower()
if SWITCHYARD_MFA_REQUIRED not in ("", "staff", "all"):
    raise ValueError("SWITCHYARD_MFA_REQUIRED must be empty, 'staff' or 'all'")
MFA_ADAPTER = "controlplane.accounts.twofactor.EncryptingMFAAdapter"
MFA_SUPPORTED_TYPES = ["totp", "recovery_codes", "webauthn"]
MFA_TOTP_ISSUER = "Switchyard"
MFA_TOTP_TOLERANCE = 1  # one 30 s step either way (clock drift); each code works once
# Security keys (WebAuthn): the relying party id is the host name the dashboard is
# opened at, unless set here (e.g. "proxy.example.com" behind a proxy that rewrites
# Host). Browsers offer keys only on https:// or http://localhost, never on an IP address.
SWITCHYARD_WEBAUTHN_RP_ID = env("SWITCHYARD_WEBAUTHN_RP_ID", "").strip().lower()
# Django's cache is shared by every process in production (Redis), so what allauth keeps
# there (rate limits, used-code markers) holds across Daphne processes; embedded mode
# runs one web process and keeps Django's default (local memory).
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL,
                          "KEY_PREFIX": "switchyard",
                          "OPTIONS": {"socket_timeout": 5, "socket_connect_timeout": 3}}}

# Single sign-on with an OpenID Connect provider (django-allauth's socialaccount; rules in
# controlplane.accounts.sso). An empty issuer turns SSO off. The provider's redirect URI
# is <dashboard>/accounts/oidc/sso/login/callback/.
SWITCHYARD_OIDC_ISSUER = env("SWITCHYARD_OIDC_ISSUER", "").strip().rstrip("/")
SWITCHYARD_OIDC_CLIENT_ID = env("SWITCHYARD_OIDC_CLIENT_ID", "").strip()
SWITCHYARD_OIDC_CLIENT_SECRET = env("SWITCHYARD_OIDC_CLIENT_SECRET", "")
SWITCHYARD_OIDC_NAME = env("SWITCHYARD_OIDC_NAME", "").strip() or "single sign-on"
SWITCHYARD_OIDC_SCOPES = env("SWITCHYARD_OIDC_SCOPES", "openid profile email").replace(",", " ").split()
SWITCHYARD_OIDC_CLAIM = env("SWITCHYARD_OIDC_CLAIM", "groups").strip()
SWITCHYARD_OIDC_STAFF_VALUES = env_list("SWITCHYARD_OIDC_STAFF_VALUES")
SWITCHYARD_OIDC_TENANT_ROLES = env("SWITCHYARD_OIDC_TENANT_ROLES", "")
SWITCHYARD_LOCAL_PASSWORDS = env("SWITCHYARD_LOCAL_PASSWORDS", "on").strip().lower() not in ("off", "0", "false", "no")
SWITCHYARD_BREAK_GLASS_USER = env("SWITCHYARD_BREAK_GLASS_USER", "").strip()
if not SWITCHYARD_LOCAL_PASSWORDS and not SWITCHYARD_OIDC_ISSUER:
    raise ValueError("SWITCHYARD_LOCAL_PASSWORDS=off needs single sign-on (SWITCHYARD_OIDC_ISSUER)")
SOCIALACCOUNT_ADAPTER = "controlplane.dashboard.views.sso.SSOAdapter"
SOCIALACCOUNT_STORE_TOKENS = False
SOCIALACCOUNT_EMAIL_AUTHENTICATION = False  # linking by e-mail follows controlplane.accounts.sso
SOCIALACCOUNT_REQUESTS_TIMEOUT = 10
SOCIALACCOUNT_PROVIDERS = {"openid_connect": {"OAUTH_PKCE_ENABLED": True, "APPS": [{
    "provider_id": "sso", "name": SWITCHYARD_OIDC_NAME, "client_id": SWITCHYARD_OIDC_CLIENT_ID,
    "secret": SWITCHYARD_OIDC_CLIENT_SECRET,
    "settings": {"server_url": SWITCHYARD_OIDC_ISSUER, "scope": SWITCHYARD_OIDC_SCOPES,
                 "oauth_pkce_enabled": True},
}] if SWITCHYARD_OIDC_ISSUER else []}}
if SWITCHYARD_OIDC_ISSUER:
    # "Sign in with ..." is a form whose answer redirects to the provider, and CSP's
    # form-action covers redirects: allow the issuer's origin (its authorization endpoint).
    from urllib.parse import urlsplit as _urlsplit
    _issuer = _urlsplit(SWITCHYARD_OIDC_ISSUER)
    CONTENT_SECURITY_POLICY["DIRECTIVES"]["form-action"] = [
        *CONTENT_SECURITY_POLICY["DIRECTIVES"]["form-action"], f"{_issuer.scheme}://{_issuer.netloc}"]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", "INFO")},
}
