"""Production (COALITION_ENV=production, the default) refuses to start on any default secret.

Each case leaves exactly one required setting out and checks the refusal names it; the last
case starts real processes with nothing set and reads their one-line error.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from services import pki
from services.common.config import ConfigError
from services.ledger.server import LedgerSettings
from services.partners.server import PartnersSettings
from services.settlement.server import SettlementSettings
from tests.support.servers import REPO_ROOT

SERVICES = {
    "ledger": (LedgerSettings, "COALITION_LEDGER"),
    "partners": (PartnersSettings, "COALITION_PARTNERS"),
    "settlement": (SettlementSettings, "COALITION_SETTLEMENT"),
}
SECRETS = {
    "ledger": (),
    "partners": ("COALITION_ADMIN_API_KEY", "COALITION_PARTNERS_ALIAS_HASH_KEY"),
    "settlement": ("COALITION_ADMIN_API_KEY",),
}


@pytest.fixture(scope="module")
def production_pki(tmp_path_factory) -> str:
    directory = str(tmp_path_factory.mktemp("production-ca"))
    pki.init_ca(directory)
    for identity in SERVICES:
        pki.issue(directory, identity, dns_names=("localhost",))
    return directory


def _complete_settings(service: str, directory: str) -> dict[str, str]:
    prefix = SERVICES[service][1]
    values = {
        "COALITION_ENV": "production",
        "COALITION_TLS_CA_PATH": os.path.join(directory, pki.CA_CERT_FILE),
        f"{prefix}_TLS_CERT_PATH": pki.cert_path(directory, service),
        f"{prefix}_TLS_KEY_PATH": pki.key_path(directory, service),
    }
    values.update({name: f"a-real-secret-for-{name.lower()}" for name in SECRETS[service]})
    return values


def _apply(monkeypatch, values: dict[str, str]) -> None:
    for name in list(os.environ):
        if name.startswith("COALITION_") and name != "COALITION_TEST_DATABASE_URL":
            monkeypatch.delenv(name)
    for name, value in values.items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize("service", SERVICES)
def test_production_starts_with_every_secret_and_refuses_without_each(monkeypatch, production_pki, service):
    settings_class = SERVICES[service][0]
    complete = _complete_settings(service, production_pki)
    _apply(monkeypatch, complete)
    settings = settings_class.from_env()
    assert not settings.transport.plaintext
    for missing in complete:
        if missing == "COALITION_ENV":
            continue  # without it, production is still the default
        _apply(monkeypatch, {name: value for name, value in complete.items() if name != missing})
        with pytest.raises(ConfigError) as refused:
            settings_class.from_env()
        assert missing in str(refused.value), (service, missing)
    # A path to a file that is not there is named too, not a FileNotFoundError('').
    prefix = SERVICES[service][1]
    _apply(monkeypatch, {**complete, f"{prefix}_TLS_CERT_PATH": "/nowhere/cert.pem"})
    with pytest.raises(ConfigError, match=f"{prefix}_TLS_CERT_PATH='/nowhere/cert.pem'"):
        settings_class.from_env()


@pytest.mark.parametrize("service", SERVICES)
def test_the_development_plaintext_switch_is_refused_in_production(monkeypatch, production_pki, service):
    settings_class = SERVICES[service][0]
    _apply(monkeypatch, {**_complete_settings(service, production_pki), "COALITION_DEV_PLAINTEXT": "1"})
    with pytest.raises(ConfigError, match="COALITION_DEV_PLAINTEXT"):
        settings_class.from_env()
    monkeypatch.setenv("COALITION_ENV", "development")
    assert settings_class.from_env().transport.plaintext


def test_development_defaults_work_only_in_development(monkeypatch, tmp_path):
    _apply(monkeypatch, {"COALITION_ENV": "development", "COALITION_DEV_PKI_DIR": str(tmp_path / "tls")})
    settings = PartnersSettings.from_env()
    assert settings.admin_api_key == "coalition-dev-admin-key"
    assert os.path.exists(tmp_path / "tls" / "partners.pem")  # the development CA, made on first use
    _apply(monkeypatch, {"COALITION_DEV_PKI_DIR": str(tmp_path / "tls")})  # COALITION_ENV unset: production
    with pytest.raises(ConfigError, match="COALITION_ADMIN_API_KEY"):
        PartnersSettings.from_env()


@pytest.mark.parametrize("module", ["services.ledger.server", "services.partners.server", "services.settlement.server"])
def test_a_service_started_with_nothing_set_exits_and_says_what_is_missing(module):
    environment = {name: value for name, value in os.environ.items() if not name.startswith("COALITION_")}
    finished = subprocess.run(
        [sys.executable, "-m", module], env=environment, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert finished.returncode == 2, finished.stderr
    (line,) = finished.stderr.strip().splitlines()
    assert line.startswith("configuration error: ")
    assert "production" in line and "COALITION_" in line


def test_a_certificate_without_its_key_is_named_in_development_too(monkeypatch, tmp_path):
    """Files given in part are never mixed with the development CA's (this used to crash on '')."""
    _apply(monkeypatch, {"COALITION_ENV": "development", "COALITION_LEDGER_TLS_CERT_PATH": str(tmp_path / "x.pem")})
    with pytest.raises(ConfigError, match="COALITION_LEDGER_TLS_KEY_PATH"):
        LedgerSettings.from_env()


@pytest.mark.parametrize("service", ["partners", "settlement"])
def test_a_published_development_secret_is_refused_in_production(monkeypatch, production_pki, service):
    settings_class = SERVICES[service][0]
    _apply(
        monkeypatch,
        {**_complete_settings(service, production_pki), "COALITION_ADMIN_API_KEY": "coalition-dev-admin-key"},
    )
    with pytest.raises(ConfigError, match="COALITION_ADMIN_API_KEY is the published development value"):
        settings_class.from_env()
