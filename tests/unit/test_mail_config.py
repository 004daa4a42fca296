"""The [mail] table of district.toml: read, checked by name, written back the same."""

from __future__ import annotations

from pathlib import Path

import pytest

from rt_client.config import DistrictConfig, load_config, write_config
from rt_client.errors import ConfigError
from rt_client.mail_config import MailConfig
from rt_server.core.notices import NoticeFacts, render_notice

KEY = "ab" * 32
BASE = f"""
district_code = "1964733"
data_dir = "data"
peer_listen = "127.0.0.1:8443"
advertised_endpoints = ["127.0.0.1:8443"]
registry_address = "127.0.0.1:7443"
registry_enroll_address = "127.0.0.1:7444"
registry_ca_path = "ca.pem"
registry_signing_key = "{KEY}"
"""
MAIL = """
[mail]
host = "smtp.district.example"
from_address = "rt@district.example"
records_administrator = "admin@district.example"
username = "rt"
password_file = "smtp-password"
ca_file = "smtp-ca.pem"
digest = true

[mail.schools]
"19647331932334" = ["a@lincoln.example", "b@lincoln.example"]

[mail.staff]
jdoe = "jdoe@district.example"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "district.toml"
    path.write_text(text)
    return path


def test_the_mail_table_is_read_and_written_back_the_same(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, BASE + MAIL))
    mail = config.mail
    assert mail is not None
    assert mail.port == 587 and mail.starttls and mail.digest
    assert mail.ca_file == tmp_path / "smtp-ca.pem"  # relative to the config's folder
    assert mail.schools == {"19647331932334": ("a@lincoln.example", "b@lincoln.example")}
    assert config.annual_notice_covers_transfers is True
    write_config(config, tmp_path / "again.toml")
    assert load_config(tmp_path / "again.toml") == config


def test_no_mail_table_means_no_mail(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, BASE))
    assert config.mail is None
    write_config(config, tmp_path / "again.toml")
    assert "[mail]" not in (tmp_path / "again.toml").read_text()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ('host = "smtp.district.example"', "mail.starttls"),  # with starttls = false below
        ('from_address = "rt@district.example\\r\\nBcc: x@evil.example"', "mail.from_address"),
        ('records_administrator = "nobody"', "mail.records_administrator"),
        ('username = "rt"\nport = 70000', "mail.port"),
        ("digest = true\nsmtp_debug = true", "smtp_debug"),
    ],
)
def test_bad_mail_settings_are_refused_by_name(tmp_path: Path, change: str, message: str) -> None:
    first = change.split(" = ")[0].split("\n")[0]
    text = "\n".join(
        change if line.startswith(first + " =") else line for line in MAIL.splitlines()
    )
    if message == "mail.starttls":
        text = text.replace("[mail]\n", "[mail]\nstarttls = false\n")
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, BASE + text))


def test_plaintext_is_allowed_only_to_a_relay_on_this_machine() -> None:
    MailConfig(
        host="localhost",
        starttls=False,
        from_address="rt@district.example",
        records_administrator="admin@district.example",
    )
    with pytest.raises(ConfigError, match="localhost"):
        MailConfig(
            host="smtp.example",
            starttls=False,
            from_address="rt@district.example",
            records_administrator="admin@district.example",
        )


def test_a_missing_password_file_is_a_clear_error(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, BASE + MAIL))
    assert config.mail is not None
    with pytest.raises(ConfigError, match="mail.password_file: cannot read"):
        config.mail.password()


def test_every_notice_names_the_request_and_no_student() -> None:
    for kind in ("new_inbound", "records_arrived", "request_rejected", "overdue", "missing_child"):
        subject, body = render_notice(
            NoticeFacts(kind=kind, request_id="354b6766-0c1f-4a43-9d3e-8f1a2b3c4d5e", district="1")
        )
        assert "354b6766" in subject
        assert "rt show 354b6766-0c1f-4a43-9d3e-8f1a2b3c4d5e" in body


def test_district_config_refuses_a_mail_value_that_is_not_a_table(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="mail"):
        load_config(write(tmp_path, 'mail = "smtp.example"\n' + BASE))
    assert DistrictConfig  # the type the table belongs to
