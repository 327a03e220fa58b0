"""Settings from ``SCIM_*`` environment variables and one TOML file: read once, typed,
validated at start.

Every service builds one ``Settings`` in its ``create_app()``/entry point (never at import
time) and passes it down; tests pass overrides. A bad value stops the process at boot with
a message naming the variable, not at the first request.

Scalars come from ``SCIM_<NAME>`` variables, else from the ``[scimbus]`` table of the file
named by ``SCIM_CONFIG_FILE`` (default ``var_dir/scimbus.toml`` when it exists), else the
defaults below. Structured configuration (connectors, schema extensions, apps) lives in the
file's other tables and reaches code as ``Settings.file``.
"""

from __future__ import annotations

import base64
import os
import secrets
import tomllib
import uuid
from dataclasses import MISSING, dataclass, field, fields, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit


class SettingsError(ValueError):
    """A SCIM_* variable has a value the service cannot run with."""


@dataclass(frozen=True)
class EntraCaller:
    """An Entra application allowed to call one SCIM app with the JWTs Entra issues it."""

    app_id: str
    object_id: str | None = None


def _guid(text: str) -> str:
    """The canonical (lower-case) form of a GUID, as Entra writes ids in its tokens."""
    return str(uuid.UUID(text.strip()))


@dataclass(frozen=True)
class Settings:
    var_dir: Path = Path("var")
    """Folder for the local run's state: SQLite file, token, Redis data, logs."""
    database_url: str = ""
    """SQLAlchemy URL of the directory store; default: SQLite file under var_dir."""
    redis_url: str = "redis://127.0.0.1:6389/0"
    """The bus, with its password: ``redis://:PASSWORD@host:6379/0`` (an ACL user:
    ``redis://USER:PASSWORD@host:6379/0``; TLS: ``rediss://``; the primary of a Sentinel
    service: ``redis+sentinel://:PASSWORD@host1:26379,host2:26379/mymaster/0``, the sentinels'
    own password as ``?sentinel_password=``, see libs/bus/connection.py). The local run starts its own
    Redis on 6389 (6379 may belong to another), with a password generated on first run and kept
    in var_dir/redis-password; unset, this defaults to that Redis when the file exists."""
    token: str = ""
    """Bearer token(s) SCIM clients send, comma-separated for rotation; default: var_dir/token."""
    write_timeout: float = 30.0
    """Seconds the front waits for a worker to apply a write before answering 503."""
    write_linger_ms: float = 3.0
    """While writes arrive concurrently, how long the front holds a batch open for more of
    them (group commit: fewer, larger bus jobs); a lone write never waits. 0: never."""
    write_batches_in_flight: int = 1
    """Bus jobs (batches of writes) one front process keeps on the bus at once; writes that
    arrive meanwhile join the next one. 1 makes the biggest batches, the least CPU per write
    (2 cores, 16 clients: 4.6-5.1 writes per job against 3.2, 8-34 % more creates/s).
    Worker processes beyond front processes x this have no batch of the front's to take
    (they still drain a backlog): raise it when workers outnumber front processes."""
    job_timeout: int = 10
    """Seconds a worker may spend on one write job before RQ stops it. A write a worker took
    at the end of SCIM_WRITE_TIMEOUT is waited for this long again, so the two add up to at
    most ``ANSWER_WITHIN`` (55 s): Entra gives up on an answer after 60."""
    max_body_bytes: int = 4 * 1024 * 1024
    """Largest request body accepted (also enforced by the gateway): 413 above it."""
    max_value_length: int = 2048
    """Longest string attribute value accepted."""
    max_operations: int = 1000
    """Most PATCH operations in one request."""
    max_results: int = 1000
    """Most resources in one list page (``count`` is capped here, as /ServiceProviderConfig says)."""
    default_app: str = "default"
    """The SCIM app served at /scim (others at /scim/<app>)."""
    apps: str = ""
    """Further SCIM apps, comma-separated, served at /scim/<app> (each isolated by its app key)."""
    http_threads: int = 16
    """Threads per gunicorn worker of the front (each waits on the bus for its write)."""
    reader_threads: int = 2
    """Threads per gunicorn worker of the reader, each with a database connection kept open.
    Two keep the GIL's queue short (the tail latency, docs/capacity.md); more let long reads
    (large groups) overlap. Add processes (SCIM_HTTP_WORKERS) or reader pods for throughput."""
    queue_name: str = "scim-writes"
    """RQ queue the front enqueues writes on."""
    workers_scale_to_zero: bool = False
    """true: no worker may be alive while the service is idle (KEDA ``minReplicaCount: 0``,
    k8s/overlays/scale-to-zero): the front stays ready without a live worker, and each write
    waits up to write_timeout for one to start and answer. false: the front is not ready
    while no worker listens on its queue."""
    log_level: str = "INFO"
    """Least severe log lines written: DEBUG, INFO, WARNING, ERROR or CRITICAL."""
    metrics_dir: str = ""
    """PROMETHEUS_MULTIPROC_DIR of this service's processes (empty: single-process metrics)."""
    config_file: str = ""
    """TOML file with a [scimbus] table of these settings and the structured tables."""
    # --- issue 3: complete SCIM 2.0 ---
    group_patch_status: int = 204
    """Answer of a group PATCH that names no attributes: 204 (Entra's advice) or 200 with the group."""
    unknown_members: str = "reject"
    """A member id that names no resource: 'reject' (400 invalidValue) or 'ignore' (skipped, logged)."""
    bulk_max_operations: int = 1000
    """Most operations in one POST /Bulk (advertised in /ServiceProviderConfig; 413 above)."""
    bulk_max_payload_bytes: int = 1024 * 1024
    """Largest POST /Bulk body (advertised in /ServiceProviderConfig; 413 above)."""
    cursor_secret: str = ""
    """Key that signs RFC 9865 paging cursors; default: a random key of the database's, made
    by migration 0005 (libs/security/cursor_key.py)."""
    cursor_ttl: int = 600
    """Seconds a paging cursor stays valid."""
    # --- end issue 3 ---
    file: Mapping[str, Any] = field(default_factory=dict)
    """The parsed config file (every table but [scimbus]), e.g. file["connectors"]."""
    # ---- issue 4: downstream deliveries
    delivery_queue: str = "scim-deliveries"
    """RQ queue of delivery jobs to the connectors, served by ``scimbus deliverer``."""
    sweep_interval: float = 2.0
    """Seconds between two sweeps of the outbox for undelivered or due changes."""
    delivery_timeout: int = 60
    """Seconds one delivery may take; a killed deliverer's lock and job are released after about this."""
    gateway_status_url: str = ""
    """nginx's stub_status page, which the sweeper reads at each scrape of its /metrics and
    exports as scim_gateway_* (issue 17; compose sets it). Empty: not exported."""

    # ---- Issue 5: security and tenancy -------------------------------------------------
    token_refresh: float = 2.0
    """Seconds a service trusts its cached copy of the credentials table (revocation delay)."""
    access_token_ttl: int = 600
    """Lifetime in seconds of the OAuth access tokens issued at /oauth/token."""
    signing_key_days: int = 30
    """Age in days after which the OAuth signing key is replaced (the old one stays published)."""
    key_encryption_key: str = ""
    """Fernet key(s) that seal the private OAuth signing keys in the database, comma-separated
    (the first seals, each opens); default: var_dir/key-encryption-key, which the local run
    creates. See libs/security/key_encryption.py."""
    entra_tenant_id: str = ""
    """Entra tenant (its id, a GUID) whose own provisioning JWTs are accepted as bearer tokens
    (empty: off). Needs entra_jwks and entra_callers."""
    entra_jwks: str = ""
    """Entra's signing keys: a JWKS file path or https URL (fetched and cached for an hour)."""
    entra_callers: str = ""
    """The Entra applications whose JWTs each SCIM app accepts, comma-separated entries
    ``<scim app>=<application id>[:<object id>]``: the token's ``appid`` (v1) or ``azp`` (v2)
    must be that application id and, when an object id is given, its ``oid`` that object id.
    An entry without ``<scim app>=`` is for default_app; a SCIM app named in no entry accepts
    no Entra JWT. Every app of a tenant gets tokens with the same issuer and audience: only
    this tells one provisioning app from another (issue 16)."""
    public_url: str = ""
    """The URL clients reach this deployment at, without /scim (e.g. https://scim.example.com:8585).
    OAuth client assertions must name ``<public_url>/oauth/token`` as their audience (never
    taken from the request's Host or X-Forwarded-Host, which a client chooses); empty: client
    assertions are refused. The local run sets it to the URL it serves."""
    jwt_leeway: int = 60
    """Clock skew in seconds allowed on the exp, nbf and iat of a JWT."""
    rate_limit: int = 0
    """Requests per token per rate_window, shared by every process (0: off; Entra quarantines
    apps that refuse too much)."""
    rate_window: int = 60
    """Seconds of one rate-limit window."""
    max_json_depth: int = 32
    """Deepest nesting of objects and arrays in a request body: 400 below it."""
    max_array_items: int = 10000
    """Most elements in one JSON array of a request body."""
    max_members: int = 10000
    """Most group members named in one request (POST, PUT or one PATCH request); 10,000 in one
    PATCH is applied in well under 2 s (make bench)."""
    max_filter_length: int = 10000
    """Longest filter expression (query or .search) accepted."""
    # ---- issue 16: what one request may cost -------------------------------------------
    max_filter_terms: int = 200
    """Most comparisons in one filter (each is a subquery): 400 invalidFilter above it. At most
    500: SQLite refuses expressions deeper than 1,000."""
    query_timeout: float = 10.0
    """Seconds one statement of the reader may run (PostgreSQL statement_timeout, SQLite progress
    handler); past it the read is 400 tooMany when its filter or sort asked for the work, else 503."""
    max_page_members: int = 10000
    """Most group members (of listed groups) or groups (of listed users) one list page renders: a
    page holds the resources that fit, at least one, and itemsPerPage says how many."""
    password_hashes: int = 2
    """Passwords one front process hashes at once (argon2id: 64 MiB and ~0.1 s each); a write that
    finds none free within 2 s is 429 with Retry-After."""
    bulk_max_passwords: int = 20
    """Most password values in one POST /Bulk (each costs ~0.1 s of CPU to hash): 413 above it."""
    audit_retention_days: int = 365
    """Days audit rows (changes, rejected writes) are kept: `scimbus audit --purge` and the
    sweeper's retention never delete a younger one. 0: the audit asks for nothing beyond
    SCIM_CHANGE_RETENTION."""
    change_retention: str = "30d"
    """How long a change every connector has handled, and its delivery ledger rows, are kept
    (the sweeper and `scimbus maintain` purge older ones): a duration such as 30d, 12h, 90m,
    3600s. The audit's window (SCIM_AUDIT_RETENTION_DAYS) still applies: the longer wins."""
    retention_interval: float = 60.0
    """Seconds between the sweeper's retention rounds (each purges for 5 s at most)."""
    tls: int = 0
    """1: the gateway serves HTTPS (self-signed pair under var_dir/tls unless tls_cert is set)."""
    tls_cert: str = ""
    """PEM certificate (chain) of the gateway; setting it turns TLS on."""
    tls_key: str = ""
    """PEM private key of tls_cert."""
    tls_client_ca: str = ""
    """PEM CA bundle: when set, clients must present a certificate it signed (mTLS)."""
    log_format: str = "json"
    """Application log lines: "json" (one object per line, with the request id) or "text"."""

    # ---- Issue 15: real tenants -----------------------------------------------------------
    group_display_name_uniqueness: str = "none"
    """Whether two groups of one SCIM app may share a displayName: "none" (RFC 7643, the
    default: tenants repeat group names) or "server" (409, any case), for every app, or app by
    app: "hr=server", "server,legacy=none". /Schemas publishes each app's choice."""
    unknown_attributes: str = "ignore"
    """Attributes no schema declares, in a POST, PUT or PATCH: "ignore" (the write succeeds
    without them; a warning and scim_undeclared_attributes_total name each one) or "reject"
    (400 invalidPath, whatever the verb)."""
    # ---- Issue 21: high availability ------------------------------------------------------
    read_database_url: str = ""
    """PostgreSQL read replicas of database_url, comma-separated SQLAlchemy URLs: the reader
    serves GETs and filters from them, each read from one that has replayed the app's last
    write (read-your-writes), else from the primary (libs/store/replicas.py)."""
    replica_wait_ms: float = 100.0
    """How long a read waits for a replica to replay the app's last write before reading the
    primary instead."""
    replica_skip_seconds: float = 5.0
    """How long a replica that is down, failed a read or lagged past replica_wait_ms is left
    out before it is tried again."""

    @property
    def read_database_urls(self) -> list[str]:
        return [u.strip() for u in self.read_database_url.split(",") if u.strip()]

    # ---- issue 20: how many processes each role starts (the CLI's defaults) --------------
    http_workers: int = 2
    """gunicorn worker processes of ``scimbus front`` and of ``scimbus reader`` (``--workers``)."""
    worker_processes: int = 2
    """Write worker processes of ``scimbus worker`` and ``scimbus run`` (``--processes``); in the
    local run 0 starts none, leaving them to a scaler (workers_scale_to_zero)."""
    deliverer_processes: int = 1
    """Delivery worker processes of ``scimbus deliverer`` (``--processes``)."""
    worker_metrics_port: int = 8603
    """Port of the worker pool's /metrics, /healthz and /readyz (``--metrics-port``; 0: none)."""
    deliverer_metrics_port: int = 8604
    """Port of the deliverer pool's /metrics, /healthz and /readyz (``--metrics-port``; 0: none)."""

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{(self.var_dir / 'scimbus.db').resolve()}"

    @property
    def change_retention_seconds(self) -> float:
        return parse_duration(self.change_retention)

    @property
    def token_endpoint(self) -> str | None:
        """``<public_url>/oauth/token``: the audience OAuth client assertions must name."""
        return self.public_url.rstrip("/") + "/oauth/token" if self.public_url else None

    @property
    def app_names(self) -> frozenset[str]:
        return frozenset({self.default_app, *(a.strip() for a in self.apps.split(",") if a.strip())})

    def group_names_unique(self, app: str) -> bool:
        """Whether a group's displayName must be unique in ``app`` (group_display_name_uniqueness)."""
        default, per_app = _uniqueness_choices(self.group_display_name_uniqueness)
        return per_app.get(app, default) == "server"

    @property
    def entra_callers_by_app(self) -> dict[str, tuple[EntraCaller, ...]]:
        """``entra_callers`` parsed: SCIM app → the Entra applications it accepts JWTs from."""
        found: dict[str, list[EntraCaller]] = {}
        for entry in (e.strip() for e in self.entra_callers.split(",")):
            if not entry:
                continue
            app, sep, caller = entry.rpartition("=")
            app, caller = (app.strip() if sep else self.default_app), caller.strip()
            app_id, _, object_id = caller.partition(":")
            try:
                parsed = EntraCaller(_guid(app_id), _guid(object_id) if object_id else None)
            except ValueError:
                raise SettingsError(f"SCIM_ENTRA_CALLERS: {entry!r} is not <scim app>=<application id>[:<object id>] "
                                    "with GUIDs") from None
            found.setdefault(app, []).append(parsed)
        return {app: tuple(callers) for app, callers in found.items()}

    @property
    def tokens(self) -> tuple[str, ...]:
        raw = self.token or read_or_create_token(self.var_dir)
        return tuple(t.strip() for t in raw.split(",") if t.strip())


UNIQUENESS_CHOICES = ("none", "server")


@lru_cache(maxsize=8)
def _uniqueness_choices(text: str) -> tuple[str, dict[str, str]]:
    """``"server,legacy=none"`` → ("server", {"legacy": "none"}); raises SettingsError."""
    default, per_app = "none", {}
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        app, sep, value = entry.rpartition("=")
        value = value.strip().lower()
        if value not in UNIQUENESS_CHOICES or (sep and not app.strip()):
            raise SettingsError(f"SCIM_GROUP_DISPLAY_NAME_UNIQUENESS: {entry!r} is not none, server, "
                                "or <app>=none|server")
        if sep:
            per_app[app.strip()] = value
        else:
            default = value
    return default, per_app


_BOOLEANS = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}


_EXPECTED = {"int": "a whole number", "float": "a number"}


def _coerce(name: str, kind: Any, raw: str) -> Any:
    if kind in (bool, "bool"):
        if raw.strip().lower() not in _BOOLEANS:
            raise SettingsError(f"SCIM_{name.upper()}={raw!r} is not a valid bool (true or false)")
        return _BOOLEANS[raw.strip().lower()]
    try:
        if kind in (int, "int"):
            return int(raw)
        if kind in (float, "float"):
            return float(raw)
        if kind in (Path, "Path"):
            return Path(raw)
        return raw
    except ValueError as exc:
        kind_name = getattr(kind, "__name__", kind)
        raise SettingsError(f"SCIM_{name.upper()}={raw!r} is not a valid {kind_name}: expected "
                            f"{_EXPECTED.get(kind_name, kind_name)}{_range_text(name)}") from exc


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Read SCIM_* variables, then apply overrides; validate the result."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in fields(Settings):
        if f.name == "file":
            continue
        raw = env.get(f"SCIM_{f.name.upper()}")
        if raw is not None and raw != "":
            values[f.name] = _coerce(f.name, f.type, raw)
    path = Path(overrides.get("config_file") or values.get("config_file")
                or Path(overrides.get("var_dir") or values.get("var_dir") or Settings.var_dir) / "scimbus.toml")
    explicit = bool(overrides.get("config_file") or values.get("config_file"))
    document = read_config_file(path, required=explicit)
    scalars = document.pop("scimbus", {})
    known = {f.name for f in fields(Settings)} - {"file"}
    for name, value in scalars.items():
        if name not in known:
            raise SettingsError(f"{path}: [scimbus] has no setting {name!r}")
        values.setdefault(name, _coerce(name, next(f.type for f in fields(Settings) if f.name == name), str(value)))
    values.setdefault("file", document)
    if "redis_url" not in values and "redis_url" not in overrides:
        password = read_secret(Path(overrides.get("var_dir") or values.get("var_dir") or Settings.var_dir)
                               / REDIS_PASSWORD_FILE)
        if password:  # an operator command next to a local run: its Redis, with its password
            values["redis_url"] = local_redis_url(password, env.get("SCIM_REDIS_PORT") or "6389")
    if isinstance(values.get("log_level"), str):
        values["log_level"] = values["log_level"].upper()  # gunicorn's own spelling is lower case
    settings = replace(Settings(), **values, **overrides)
    _validate(settings)
    return settings


POSITIVE = ("write_timeout", "job_timeout", "max_body_bytes", "max_value_length", "max_operations", "max_results",
            "http_threads", "reader_threads", "write_batches_in_flight",
            # issue 5
            "token_refresh", "access_token_ttl", "signing_key_days", "jwt_leeway", "rate_window",
            "max_json_depth", "max_array_items", "max_members", "max_filter_length",
            # issue 16
            "query_timeout", "max_page_members", "password_hashes", "bulk_max_passwords",
            # issue 18
            "retention_interval")
"""Numeric settings that must be above 0."""


RANGES: dict[str, tuple[float, float]] = {
    "max_filter_terms": (1, 500),  # SQLite refuses expressions deeper than 1,000
    "write_linger_ms": (0, 100),
    # issue 20: the roles' process counts and ports
    "http_workers": (1, 256),
    "worker_processes": (0, 256),
    "deliverer_processes": (0, 256),
    "worker_metrics_port": (0, 65535),
    "deliverer_metrics_port": (0, 65535),
    # issue 18: 0 leaves the changes' window to SCIM_CHANGE_RETENTION alone
    "audit_retention_days": (0, 36500),
}
"""Inclusive bounds of the numeric settings that have both; ``_validate`` holds the rest."""


def _range_text(name: str) -> str:
    if name in POSITIVE:
        return " above 0"
    low, high = RANGES.get(name, (None, None))
    return f" between {low:g} and {high:g}" if low is not None else ""


ANSWER_WITHIN = 55
"""Seconds within which the front answers a write at the latest (SCIM_WRITE_TIMEOUT + SCIM_JOB_TIMEOUT):
Entra gives up after 60, and would take a write that commits later for failed."""


def _validate(s: Settings) -> None:
    if s.write_timeout + s.job_timeout > ANSWER_WITHIN:
        raise SettingsError(f"SCIM_WRITE_TIMEOUT + SCIM_JOB_TIMEOUT must be at most {ANSWER_WITHIN} s (Entra waits 60 "
                            f"s for an answer), not {s.write_timeout:g} + {s.job_timeout}")
    for name in POSITIVE:
        if getattr(s, name) <= 0:
            raise SettingsError(f"SCIM_{name.upper()} must be positive, not {getattr(s, name)!r}")
    for name, (low, high) in RANGES.items():
        if not low <= getattr(s, name) <= high:
            raise SettingsError(f"SCIM_{name.upper()} must be between {low:g} and {high:g}, not {getattr(s, name)!r}")
    try:
        parse_duration(s.change_retention)
    except ValueError as exc:
        raise SettingsError(f"SCIM_CHANGE_RETENTION={s.change_retention!r} {exc}") from None
    if s.log_level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise SettingsError(f"SCIM_LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, not {s.log_level!r}")
    if not s.default_app.replace("-", "").replace("_", "").isalnum():
        raise SettingsError("SCIM_DEFAULT_APP may hold letters, digits, '-' and '_' only")
    from libs.bus.connection import RedisUrlError, validate_url

    try:
        validate_url(s.redis_url)
    except RedisUrlError as exc:  # its message never echoes the URL: it holds a password
        raise SettingsError(str(exc)) from None
    # issue 3
    if s.group_patch_status not in (200, 204):
        raise SettingsError("SCIM_GROUP_PATCH_STATUS must be 200 or 204")
    if s.unknown_members not in ("reject", "ignore"):
        raise SettingsError("SCIM_UNKNOWN_MEMBERS must be 'reject' or 'ignore'")
    for name in ("bulk_max_operations", "bulk_max_payload_bytes", "cursor_ttl"):
        if getattr(s, name) <= 0:
            raise SettingsError(f"SCIM_{name.upper()} must be positive, not {getattr(s, name)!r}")
    # issue 15
    unknown_apps = set(_uniqueness_choices(s.group_display_name_uniqueness)[1]) - s.app_names
    if unknown_apps:
        raise SettingsError(f"SCIM_GROUP_DISPLAY_NAME_UNIQUENESS names {sorted(unknown_apps)[0]!r}, which is "
                            "neither SCIM_DEFAULT_APP nor in SCIM_APPS")
    if s.unknown_attributes not in ("ignore", "reject"):
        raise SettingsError("SCIM_UNKNOWN_ATTRIBUTES must be 'ignore' or 'reject'")
    _validate_entra(s)
    for key in (k.strip() for k in s.key_encryption_key.split(",") if k.strip()):
        try:
            valid = len(base64.urlsafe_b64decode(key.encode())) == 32
        except ValueError:
            valid = False
        if not valid:
            raise SettingsError("SCIM_KEY_ENCRYPTION_KEY must hold Fernet keys (32 bytes, URL-safe base64), "
                                "comma-separated")
    if s.public_url:
        _validate_public_url(s.public_url)
    _validate_replicas(s)


def _validate_replicas(s: Settings) -> None:
    if not s.read_database_urls:
        return
    if not s.database.startswith("postgresql"):
        raise SettingsError("SCIM_READ_DATABASE_URL needs a PostgreSQL SCIM_DATABASE_URL (its replicas)")
    for url in s.read_database_urls:  # not echoed: a URL may hold a password
        if not url.startswith("postgresql"):
            raise SettingsError("SCIM_READ_DATABASE_URL must list postgresql:// URLs, comma-separated")
    if not 0 <= s.replica_wait_ms <= 5000:
        raise SettingsError(f"SCIM_REPLICA_WAIT_MS must be between 0 and 5000, not {s.replica_wait_ms!r}")
    if s.replica_skip_seconds <= 0:
        raise SettingsError(f"SCIM_REPLICA_SKIP_SECONDS must be positive, not {s.replica_skip_seconds!r}")


def _validate_public_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment \
            or parts.username or parts.password or url.rstrip("/").endswith("/scim"):
        raise SettingsError(f"SCIM_PUBLIC_URL={url!r} is not a URL such as https://scim.example.com:8585 "
                            "(scheme, host, port; no /scim, query or user)")


def _validate_entra(s: Settings) -> None:
    callers = s.entra_callers_by_app
    if not s.entra_tenant_id:
        if callers:
            raise SettingsError("SCIM_ENTRA_CALLERS needs SCIM_ENTRA_TENANT_ID (the tenant that issues their JWTs)")
        return
    try:
        _guid(s.entra_tenant_id)
    except ValueError:
        raise SettingsError(f"SCIM_ENTRA_TENANT_ID={s.entra_tenant_id!r} is not a tenant id (a GUID)") from None
    if not s.entra_jwks:
        raise SettingsError("SCIM_ENTRA_JWKS must name Entra's JWKS (file or URL) when SCIM_ENTRA_TENANT_ID is set")
    if not callers:
        raise SettingsError("SCIM_ENTRA_CALLERS must name the Entra application id of each provisioning app "
                            "allowed to call when SCIM_ENTRA_TENANT_ID is set (any app of the tenant could otherwise)")
    unknown = sorted(set(callers) - s.app_names)
    if unknown:
        raise SettingsError(f"SCIM_ENTRA_CALLERS names the SCIM app {unknown[0]!r}, which is not configured "
                            "(SCIM_APPS)")


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds of a duration written ``30d``, ``12h``, ``90m``, ``45s`` or a bare number of seconds."""
    raw = str(text).strip().lower()
    unit = _UNITS.get(raw[-1:], None) if raw else None
    number = raw[:-1] if unit else raw
    try:
        seconds = float(number) * (unit or 1)
    except ValueError:
        raise ValueError("is not a duration such as 30d, 12h, 90m or 3600s") from None
    if not seconds > 0 or seconds != seconds or seconds == float("inf"):
        raise ValueError("must be a positive duration")
    return seconds


def read_config_file(path: Path, *, required: bool) -> dict[str, Any]:
    if not path.exists():
        if required:
            raise SettingsError(f"SCIM_CONFIG_FILE={str(path)!r} does not exist")
        return {}
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SettingsError(f"{path}: {exc}") from exc


REDIS_PASSWORD_FILE = "redis-password"
"""The local run's Redis password, under var_dir (mode 600)."""


def local_redis_url(password: str, port: str | int) -> str:
    """The URL of the local run's own Redis (the password is URL-safe base64: no escaping)."""
    return f"redis://:{password}@127.0.0.1:{port}/0"


def read_secret(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def read_or_create_secret(path: Path, generate: Callable[[], str] = lambda: secrets.token_urlsafe(32)) -> str:
    """The secret kept in ``path``: made with ``generate`` and written (mode 600) the first
    time; concurrent first calls of several processes agree on one."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = generate()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process of the stack made it first
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(secret + "\n")
    return secret


def read_or_create_token(var_dir: Path) -> str:
    """The local run's token: generated once, kept in var_dir/token (mode 600)."""
    return read_or_create_secret(var_dir / "token")


@dataclass(frozen=True)
class SettingDoc:
    variable: str
    kind: str
    default: Any
    bounds: str
    """"above 0", "between 1 and 500", or empty."""
    doc: str


def setting_docs() -> list[SettingDoc]:
    """Every setting as ``scimbus settings`` documents it, read from this module: its type and
    default from ``Settings``, its bounds from ``POSITIVE``/``RANGES``, and its meaning from the
    docstring under the field (Python keeps none at run time, so the source is parsed)."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(Settings))
    docs: dict[str, str] = {}
    body = tree.body[0].body  # type: ignore[attr-defined]
    for node, after in zip(body, body[1:] + [None]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr) \
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str):
            docs[node.target.id] = " ".join(after.value.value.split())
    out = []
    for f in fields(Settings):
        if f.name == "file":
            continue
        default = None if f.default is MISSING else f.default
        out.append(SettingDoc(f"SCIM_{f.name.upper()}", str(f.type), default, _range_text(f.name).strip(),
                              docs.get(f.name, "")))
    return out
