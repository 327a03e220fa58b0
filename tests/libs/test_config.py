import re
import uuid
from dataclasses import fields
from pathlib import Path

import pytest

from libs.config import EntraCaller, Settings, SettingsError, load_settings


def test_environment_variables_are_typed(tmp_path):
    settings = load_settings({"SCIM_WRITE_TIMEOUT": "12.5", "SCIM_MAX_RESULTS": "50", "SCIM_VAR_DIR": str(tmp_path)})
    assert settings.write_timeout == 12.5
    assert settings.max_results == 50


def test_a_bad_value_names_its_variable(tmp_path):
    with pytest.raises(SettingsError, match="SCIM_MAX_RESULTS"):
        load_settings({"SCIM_MAX_RESULTS": "lots", "SCIM_VAR_DIR": str(tmp_path)})
    with pytest.raises(SettingsError, match="SCIM_WRITE_TIMEOUT"):
        load_settings({"SCIM_WRITE_TIMEOUT": "0", "SCIM_VAR_DIR": str(tmp_path)})
    with pytest.raises(SettingsError, match="SCIM_WRITE_BATCHES_IN_FLIGHT"):  # no batch could ever leave
        load_settings({"SCIM_WRITE_BATCHES_IN_FLIGHT": "0", "SCIM_VAR_DIR": str(tmp_path)})


def test_the_config_file_gives_scalars_and_tables_and_the_environment_wins(tmp_path):
    path = tmp_path / "scimbus.toml"
    path.write_text('[scimbus]\nmax_results = 77\nwrite_timeout = 9\n\n[connectors.hr]\nkind = "webhook"\n')
    settings = load_settings({"SCIM_VAR_DIR": str(tmp_path), "SCIM_WRITE_TIMEOUT": "3"})
    assert settings.max_results == 77
    assert settings.write_timeout == 3
    assert settings.file == {"connectors": {"hr": {"kind": "webhook"}}}


def test_an_unknown_setting_in_the_file_stops_the_start(tmp_path):
    (tmp_path / "scimbus.toml").write_text("[scimbus]\nmax_resluts = 1\n")
    with pytest.raises(SettingsError, match="max_resluts"):
        load_settings({"SCIM_VAR_DIR": str(tmp_path)})


def test_a_named_config_file_must_exist(tmp_path):
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings({"SCIM_CONFIG_FILE": str(tmp_path / "missing.toml")})


def test_the_token_is_generated_once_and_kept(tmp_path):
    first = load_settings({"SCIM_VAR_DIR": str(tmp_path)}).tokens
    assert first == load_settings({"SCIM_VAR_DIR": str(tmp_path)}).tokens
    assert (tmp_path / "token").stat().st_mode & 0o777 == 0o600


def test_the_log_level_is_read_in_either_case_and_a_wrong_one_stops_the_start():
    assert load_settings({"SCIM_LOG_LEVEL": "warning"}).log_level == "WARNING"
    with pytest.raises(SettingsError, match="SCIM_LOG_LEVEL"):
        load_settings({"SCIM_LOG_LEVEL": "loud"})


# --- the documentation states the defaults libs/config.py has (issue 16) ------------------

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_UNITS = {"MiB": 1024 * 1024, "KiB": 1024}
_NUMBER = r"(\d[\d,]*(?:\.\d+)?)\s*(MiB|KiB)?"


def _defaults() -> dict[str, float]:
    return {f"SCIM_{f.name.upper()}": getattr(Settings, f.name) for f in fields(Settings)
            if isinstance(getattr(Settings, f.name, None), (int, float))}


def _value(number: str, unit: str | None) -> float:
    return float(number.replace(",", "")) * _UNITS.get(unit or "", 1)


def _table(text: str) -> list[tuple[str, float]]:
    return [(m[1], _value(m[2], m[3])) for m in re.finditer(rf"^\| `(SCIM_[A-Z_]+)` \| {_NUMBER}", text, re.M)]


def _stated(text: str) -> list[tuple[str, float]]:
    """Every default a text states: a table row ``| `SCIM_X` | 4,096 … |`` or prose
    ``SCIM_X (30 s …)`` / ``SCIM_X seconds (600)``."""
    rows = _table(text)
    prose = " ".join(text.split())
    rows += [(m[1], _value(m[2], m[3])) for m in re.finditer(rf"`(SCIM_[A-Z_]+)`(?: seconds)? \({_NUMBER}", prose)]
    return rows


def test_the_readme_and_docs_state_each_setting_with_its_default_in_libs_config():
    defaults = _defaults()
    wrong = [f"{path.name}: {name} says {value:g}, libs/config.py has {defaults[name]:g}"
             for path in DOCUMENTS for name, value in _stated(path.read_text())
             if name in defaults and value != defaults[name]]
    assert wrong == []


def test_the_readme_limits_table_lists_every_limit_with_its_default():
    text = (ROOT / "README.md").read_text()
    table = dict(_table(text))
    limits = {f"SCIM_{f.name.upper()}" for f in fields(Settings)
              if f.name.startswith(("max_", "bulk_max_")) or f.name in ("query_timeout", "password_hashes")}
    assert limits <= set(table), f"missing from the README's limits: {sorted(limits - set(table))}"
    assert {name: table[name] for name in limits} == {name: _defaults()[name] for name in limits}


def test_a_default_stated_wrong_is_caught():
    assert _stated("group members per request `SCIM_MAX_MEMBERS`\n(5,000, 413)") == [("SCIM_MAX_MEMBERS", 5000)]
    assert _stated("| `SCIM_MAX_BODY_BYTES` | 4,194,304 (4 MiB) | 413 |") == [("SCIM_MAX_BODY_BYTES", 4194304)]
    assert _stated("`SCIM_BULK_MAX_PAYLOAD_BYTES` (1 MiB)") == [("SCIM_BULK_MAX_PAYLOAD_BYTES", 1048576)]


def test_an_operator_command_beside_a_local_run_reaches_its_redis_with_the_generated_password(tmp_path):
    assert load_settings({"SCIM_VAR_DIR": str(tmp_path)}).redis_url == "redis://127.0.0.1:6389/0"
    (tmp_path / "redis-password").write_text("s3cret\n")
    env = {"SCIM_VAR_DIR": str(tmp_path), "SCIM_REDIS_PORT": "7000"}
    assert load_settings(env).redis_url == "redis://:s3cret@127.0.0.1:7000/0"
    assert load_settings({**env, "SCIM_REDIS_URL": "redis://:other@bus:6379/0"}).redis_url == \
        "redis://:other@bus:6379/0"


def test_a_malformed_redis_url_is_refused_without_echoing_its_password():
    with pytest.raises(SettingsError) as refused:
        load_settings({"SCIM_REDIS_URL": "redis:/:hunter2@bus/0"})
    assert "SCIM_REDIS_URL" in str(refused.value) and "hunter2" not in str(refused.value)


TENANT, HR_APP, HR_OBJECT, ACME_APP = (str(uuid.uuid4()) for _ in range(4))


def _entra(tmp_path, **env):
    return load_settings({"SCIM_VAR_DIR": str(tmp_path), "SCIM_APPS": "acme", "SCIM_ENTRA_TENANT_ID": TENANT,
                          "SCIM_ENTRA_JWKS": str(tmp_path / "jwks.json"), **env})


def test_entra_callers_are_pinned_per_scim_app_and_default_to_the_default_app(tmp_path):
    settings = _entra(tmp_path, SCIM_ENTRA_CALLERS=f"{HR_APP}:{HR_OBJECT.upper()}, acme={ACME_APP}")
    assert settings.entra_callers_by_app == {"default": (EntraCaller(HR_APP, HR_OBJECT),),
                                             "acme": (EntraCaller(ACME_APP),)}


@pytest.mark.parametrize("env, message", [
    ({}, "SCIM_ENTRA_CALLERS must name"),  # Entra JWTs of any app of the tenant would get in
    ({"SCIM_ENTRA_CALLERS": "provisioning"}, "SCIM_ENTRA_CALLERS: 'provisioning'"),
    ({"SCIM_ENTRA_CALLERS": f"{HR_APP}:oid"}, "SCIM_ENTRA_CALLERS"),
    ({"SCIM_ENTRA_CALLERS": f"payroll={HR_APP}"}, "SCIM app 'payroll'"),
    ({"SCIM_ENTRA_CALLERS": HR_APP, "SCIM_ENTRA_TENANT_ID": "contoso"}, "SCIM_ENTRA_TENANT_ID"),
    ({"SCIM_ENTRA_CALLERS": HR_APP, "SCIM_ENTRA_JWKS": ""}, "SCIM_ENTRA_JWKS"),
    ({"SCIM_ENTRA_CALLERS": HR_APP, "SCIM_ENTRA_TENANT_ID": ""}, "needs SCIM_ENTRA_TENANT_ID"),
])
def test_entra_settings_that_would_let_a_wrong_token_in_or_none_stop_the_start(tmp_path, env, message):
    with pytest.raises(SettingsError, match=message):
        _entra(tmp_path, **env)


def test_the_public_url_gives_the_token_endpoint_and_a_wrong_one_stops_the_start(tmp_path):
    settings = load_settings({"SCIM_VAR_DIR": str(tmp_path), "SCIM_PUBLIC_URL": "https://scim.example.com:8585/"})
    assert settings.token_endpoint == "https://scim.example.com:8585/oauth/token"
    assert load_settings({"SCIM_VAR_DIR": str(tmp_path)}).token_endpoint is None  # client assertions refused
    for wrong in ("scim.example.com", "ftp://scim.example.com", "https://scim.example.com/scim",
                  "https://user:pw@scim.example.com", "https://scim.example.com/?a=b"):
        with pytest.raises(SettingsError, match="SCIM_PUBLIC_URL"):
            load_settings({"SCIM_VAR_DIR": str(tmp_path), "SCIM_PUBLIC_URL": wrong})


def test_a_key_encryption_key_that_is_not_a_fernet_key_stops_the_start(tmp_path):
    from libs.security.key_encryption import new_key

    two = f"{new_key()},{new_key()}"
    assert load_settings({"SCIM_VAR_DIR": str(tmp_path), "SCIM_KEY_ENCRYPTION_KEY": two}).key_encryption_key == two
    for wrong in ("secret", "c2hvcnQ=", f"{new_key()},oops"):
        with pytest.raises(SettingsError, match="SCIM_KEY_ENCRYPTION_KEY"):
            load_settings({"SCIM_VAR_DIR": str(tmp_path), "SCIM_KEY_ENCRYPTION_KEY": wrong})


def test_without_the_variable_the_key_encryption_key_is_the_local_runs_file_if_there_is_one(tmp_path):
    from libs.security.key_encryption import configured_keys, create_local_key

    settings = load_settings({"SCIM_VAR_DIR": str(tmp_path)})
    assert configured_keys(settings) == ()  # compose, Kubernetes: nothing is made up per container
    create_local_key(tmp_path)  # what the local run does at start
    create_local_key(tmp_path)
    (key,) = configured_keys(settings)
    assert (tmp_path / "key-encryption-key").read_text() == key + "\n"
    assert (tmp_path / "key-encryption-key").stat().st_mode & 0o777 == 0o600
def test_a_yes_or_no_setting_reads_the_usual_spellings_from_the_environment_and_the_file(tmp_path):
    for raw, value in (("true", True), ("TRUE", True), ("1", True), ("yes", True), ("false", False), ("0", False),
                       ("off", False)):
        settings = load_settings({"SCIM_WORKERS_SCALE_TO_ZERO": raw, "SCIM_VAR_DIR": str(tmp_path)})
        assert settings.workers_scale_to_zero is value, raw
    assert load_settings({"SCIM_VAR_DIR": str(tmp_path)}).workers_scale_to_zero is False
    with pytest.raises(SettingsError, match="SCIM_WORKERS_SCALE_TO_ZERO='maybe' is not a valid bool"):
        load_settings({"SCIM_WORKERS_SCALE_TO_ZERO": "maybe", "SCIM_VAR_DIR": str(tmp_path)})
    (tmp_path / "scimbus.toml").write_text("[scimbus]\nworkers_scale_to_zero = true\n")  # a TOML boolean
    assert load_settings({"SCIM_VAR_DIR": str(tmp_path)}).workers_scale_to_zero is True


@pytest.mark.parametrize("text, seconds", [("30d", 30 * 86400), ("12h", 43200), ("90m", 5400), ("45s", 45),
                                           ("3600", 3600), (" 1.5H ", 5400)])
def test_the_change_retention_is_a_duration(tmp_path, text, seconds):
    settings = load_settings({"SCIM_VAR_DIR": str(tmp_path), "SCIM_CHANGE_RETENTION": text})
    assert settings.change_retention_seconds == seconds


@pytest.mark.parametrize("text", ["", "d", "30 days", "-1h", "0s", "nan", "inf"])
def test_a_change_retention_that_is_no_duration_stops_the_start(tmp_path, text):
    with pytest.raises(SettingsError, match="SCIM_CHANGE_RETENTION"):
        load_settings({"SCIM_VAR_DIR": str(tmp_path)}, change_retention=text)


def test_the_audit_retention_may_be_zero_but_not_negative(tmp_path):
    assert load_settings({"SCIM_VAR_DIR": str(tmp_path), "SCIM_AUDIT_RETENTION_DAYS": "0"}).audit_retention_days == 0
    with pytest.raises(SettingsError, match="SCIM_AUDIT_RETENTION_DAYS"):
        load_settings({"SCIM_VAR_DIR": str(tmp_path), "SCIM_AUDIT_RETENTION_DAYS": "-1"})


# --- issue 20: every setting documented from libs/config.py --------------------------------

def test_every_setting_has_its_meaning_written_under_it():
    from libs.config import setting_docs

    assert [d.variable for d in setting_docs() if not d.doc] == []


def test_a_write_timeout_and_job_timeout_that_could_answer_after_entra_gave_up_are_refused(tmp_path):
    with pytest.raises(SettingsError, match=r"SCIM_WRITE_TIMEOUT \+ SCIM_JOB_TIMEOUT must be at most 55 s"):
        load_settings({"SCIM_WRITE_TIMEOUT": "50", "SCIM_JOB_TIMEOUT": "10", "SCIM_VAR_DIR": str(tmp_path)})
    assert load_settings({"SCIM_WRITE_TIMEOUT": "45", "SCIM_JOB_TIMEOUT": "10", "SCIM_VAR_DIR": str(tmp_path)})


def test_docs_settings_md_is_what_scimbus_settings_prints(capsys):
    from services.cli import main

    main(["settings", "--markdown"])
    table = capsys.readouterr().out
    assert table in (ROOT / "docs/settings.md").read_text(), "regenerate: scimbus settings --markdown"


def test_the_bounds_a_setting_is_documented_with_are_the_ones_enforced():
    from libs.config import setting_docs

    docs = {d.variable: d.bounds for d in setting_docs()}
    assert docs["SCIM_HTTP_WORKERS"] == "between 1 and 256"
    assert docs["SCIM_JOB_TIMEOUT"] == "above 0"
    with pytest.raises(SettingsError, match="SCIM_HTTP_WORKERS must be between 1 and 256"):
        load_settings({"SCIM_HTTP_WORKERS": "257"})
