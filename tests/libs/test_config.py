import pytest

from libs.config import SettingsError, load_settings


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
