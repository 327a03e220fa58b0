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
