"""Every file path in a config file is relative to that file, the API's TLS pair included."""

from __future__ import annotations

from pathlib import Path

from weijian.config import load_settings


def test_relative_api_tls_files_are_relative_to_the_config_file(tmp_path: Path) -> None:
    conf = tmp_path / "etc" / "weijian.toml"
    conf.parent.mkdir()
    conf.write_text('[alerts]\napi_tls_cert = "tls/api.pem"\napi_tls_key = "tls/api.key"\n')
    alerts = load_settings(conf).alerts
    assert alerts.api_tls_cert == conf.parent / "tls" / "api.pem"
    assert alerts.api_tls_key == conf.parent / "tls" / "api.key"
