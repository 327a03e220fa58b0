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

import os
import secrets
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping


class SettingsError(ValueError):
    """A SCIM_* variable has a value the service cannot run with."""


@dataclass(frozen=True)
class Settings:
    var_dir: Path = Path("var")
    """Folder for the local run's state: SQLite file, token, Redis data, logs."""
    database_url: str = ""
    """SQLAlchemy URL of the directory store; default: SQLite file under var_dir."""
    redis_url: str = "redis://127.0.0.1:6389/0"
    """The bus. The local run starts its own Redis on 6389 (6379 may belong to another)."""
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
    """Seconds a worker may spend on one write job before RQ stops it."""
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
    """Key that signs RFC 9865 paging cursors; default: derived from the bearer token(s)."""
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

    # ---- Issue 5: security and tenancy -------------------------------------------------
    token_refresh: float = 2.0
    """Seconds a service trusts its cached copy of the credentials table (revocation delay)."""
    access_token_ttl: int = 600
    """Lifetime in seconds of the OAuth access tokens issued at /oauth/token."""
    signing_key_days: int = 30
    """Age in days after which the OAuth signing key is replaced (the old one stays published)."""
    entra_tenant_id: str = ""
    """Entra tenant whose own provisioning JWTs are accepted as bearer tokens (empty: off)."""
    entra_jwks: str = ""
    """Entra's signing keys: a JWKS file path or https URL (fetched and cached for an hour)."""
    entra_app: str = ""
    """SCIM app that an Entra-issued JWT may use (default: default_app)."""
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
    audit_retention_days: int = 365
    """Days `scimbus audit --purge` keeps audit rows (changes, rejected writes)."""
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

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{(self.var_dir / 'scimbus.db').resolve()}"

    @property
    def app_names(self) -> frozenset[str]:
        return frozenset({self.default_app, *(a.strip() for a in self.apps.split(",") if a.strip())})

    @property
    def tokens(self) -> tuple[str, ...]:
        raw = self.token or read_or_create_token(self.var_dir)
        return tuple(t.strip() for t in raw.split(",") if t.strip())


_BOOLEANS = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}


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
        raise SettingsError(f"SCIM_{name.upper()}={raw!r} is not a valid {getattr(kind, '__name__', kind)}") from exc


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
    if isinstance(values.get("log_level"), str):
        values["log_level"] = values["log_level"].upper()  # gunicorn's own spelling is lower case
    settings = replace(Settings(), **values, **overrides)
    _validate(settings)
    return settings


def _validate(s: Settings) -> None:
    positive = ("write_timeout", "job_timeout", "max_body_bytes", "max_value_length", "max_operations", "max_results",
                "http_threads", "reader_threads", "write_batches_in_flight",
                # issue 5
                "token_refresh", "access_token_ttl", "signing_key_days", "jwt_leeway", "rate_window",
                "max_json_depth", "max_array_items", "max_members", "max_filter_length", "audit_retention_days")
    for name in positive:
        if getattr(s, name) <= 0:
            raise SettingsError(f"SCIM_{name.upper()} must be positive, not {getattr(s, name)!r}")
    if not 0 <= s.write_linger_ms <= 100:
        raise SettingsError(f"SCIM_WRITE_LINGER_MS must be between 0 and 100, not {s.write_linger_ms!r}")
    if s.log_level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise SettingsError(f"SCIM_LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, not {s.log_level!r}")
    if not s.default_app.replace("-", "").replace("_", "").isalnum():
        raise SettingsError("SCIM_DEFAULT_APP may hold letters, digits, '-' and '_' only")
    if not s.redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise SettingsError(f"SCIM_REDIS_URL={s.redis_url!r} is not a redis:// URL")
    # issue 3
    if s.group_patch_status not in (200, 204):
        raise SettingsError("SCIM_GROUP_PATCH_STATUS must be 200 or 204")
    if s.unknown_members not in ("reject", "ignore"):
        raise SettingsError("SCIM_UNKNOWN_MEMBERS must be 'reject' or 'ignore'")
    for name in ("bulk_max_operations", "bulk_max_payload_bytes", "cursor_ttl"):
        if getattr(s, name) <= 0:
            raise SettingsError(f"SCIM_{name.upper()} must be positive, not {getattr(s, name)!r}")


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


def read_or_create_token(var_dir: Path) -> str:
    """The local run's token: generated once, kept in var_dir/token (mode 600)."""
    path = var_dir / "token"
    if path.exists():
        return path.read_text().strip()
    var_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process of the stack made it first
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    return token
