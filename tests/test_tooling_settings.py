"""Tools follow the settings: clients dial the documented address settings, `make run` prints the
ports it bound, the demo's preview month is the coalition's, every COALITION_* variable the code
reads is in the README's settings tables, and the docs the code relies on are in the repository."""

from __future__ import annotations

import ast
import os
import re
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from services import run
from services.common import cli as common_cli
from services.common.addresses import dial_address
from services.partners import admin_cli, demo_client
from services.settlement import cli
from tests.support.error_reasons import parsed_services
from tests.support.servers import REPO_ROOT

# Functions that read one environment variable named by their first argument.
READERS = {"env_str", "env_int", "env_choice", "secret_setting", "getenv", "get"}
_HEAD = "(_[A-Z0-9_]+)?"
_SETTING = re.compile(r"COALITION_[A-Z0-9_]+")  # any such literal names a setting (or the head of some)


def _read(*parts: str) -> str:
    with open(os.path.join(REPO_ROOT, *parts), encoding="utf-8") as file:
        return file.read()


@pytest.mark.parametrize("service", ["ledger", "partners", "settlement"])
def test_a_client_dials_the_address_setting_else_where_the_service_listens(monkeypatch, service):
    upper = service.upper()
    monkeypatch.delenv(f"COALITION_{upper}_ADDRESS", raising=False)
    monkeypatch.delenv(f"COALITION_{upper}_LISTEN_ADDRESS", raising=False)
    assert dial_address(service).startswith("127.0.0.1:5005")
    monkeypatch.setenv(f"COALITION_{upper}_LISTEN_ADDRESS", "0.0.0.0:6100")
    assert dial_address(service) == "127.0.0.1:6100"
    monkeypatch.setenv(f"COALITION_{upper}_ADDRESS", "ledger.internal:7000")
    assert dial_address(service) == "ledger.internal:7000"


def test_the_demo_and_the_finance_tool_dial_the_address_settings(monkeypatch):
    monkeypatch.setenv("COALITION_PARTNERS_ADDRESS", "127.0.0.1:6201")
    monkeypatch.setenv("COALITION_SETTLEMENT_ADDRESS", "127.0.0.1:6202")
    dialled = []
    monkeypatch.setattr(demo_client, "client_transport", lambda: None)
    monkeypatch.setattr(demo_client, "run", lambda address, transport: dialled.append(address))
    demo_client.main()

    class Refused(Exception):
        pass

    def channel(address):
        dialled.append(address)
        raise Refused

    # Both operator tools open their channel through services/common/cli.py.
    monkeypatch.setattr(common_cli, "client_transport", lambda: SimpleNamespace(channel=channel))
    with pytest.raises(Refused):
        cli.main(["periods"])
    with pytest.raises(Refused):
        admin_cli.main(["partners", "list"])
    assert dialled == ["127.0.0.1:6201", "127.0.0.1:6202", "127.0.0.1:6201"]


def _server(listen_address: str, port: int):
    return SimpleNamespace(listen_address=listen_address, port=port, transport=SimpleNamespace(plaintext=True))


def test_the_banner_shows_the_ports_bound_and_how_clients_find_them():
    moved = run.banner([_server("127.0.0.1:0", 61001), _server("0.0.0.0:0", 61002), _server("127.0.0.1:0", 61003)])
    assert "ledger 127.0.0.1:61001, partners 127.0.0.1:61002, settlement 127.0.0.1:61003" in moved
    assert "COALITION_PARTNERS_ADDRESS=127.0.0.1:61002" in moved
    default = run.banner([_server(f"127.0.0.1:{port}", port) for port in (50051, 50052, 50053)])
    assert "partners 127.0.0.1:50052" in default and "_ADDRESS=" not in default


def test_the_demo_previews_the_month_of_the_coalition_time_zone(monkeypatch):
    new_year_utc = datetime(2026, 12, 31, 23, 30, tzinfo=UTC)  # already January in Amsterdam
    monkeypatch.setenv("COALITION_TIME_ZONE", "Europe/Amsterdam")
    assert cli.current_month(new_year_utc) == "2027-01"
    monkeypatch.setenv("COALITION_TIME_ZONE", "UTC")
    assert cli.current_month(new_year_utc) == "2026-12"
    assert "date +" not in _read("Makefile")  # the machine's zone nowhere in `make demo`


def _documented_settings() -> set[str]:
    """Every COALITION_* name in a README table row; `..._TAIL` shares the row's first name's head."""
    names = set()
    for row in _read("README.md").splitlines():
        if not row.startswith("|"):
            continue
        full = re.findall(r"`(COALITION_[A-Z0-9_]+\*?)`", row)
        names.update(full)
        for tail in re.findall(r"`\.\.\.(_[A-Z0-9_]+)`", row):
            head = full[0]
            cut = head.find(tail.split("_")[1], len("COALITION_"))
            names.add(head[: cut - 1] + tail if cut > 0 else tail)
    return names


def _read_settings() -> set[str]:
    """COALITION_* names the code under services/ reads (f-strings as regular expressions), and every
    COALITION_* literal (names kept in tables, like services/common/addresses.py's)."""
    constants, reads = {}, set()
    trees = [tree for _, tree in parsed_services()]
    for tree in trees:
        for node in tree.body:
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
                constants.update(
                    {target.id: node.value.value for target in node.targets if isinstance(target, ast.Name)}
                )
    for tree in trees:
        for node in ast.walk(tree):
            argument = None
            if isinstance(node, ast.Call) and node.args:
                callee = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
                if callee in READERS:
                    argument = node.args[0]
            elif isinstance(node, ast.Subscript) and getattr(node.value, "attr", "") == "environ":
                argument = node.slice
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and _SETTING.fullmatch(node.value):
                reads.add(re.escape(node.value) + _HEAD)  # a name, or the head of names
            if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                reads.add(re.escape(argument.value))
            elif isinstance(argument, ast.Name) and isinstance(constants.get(argument.id), str):
                reads.add(re.escape(constants[argument.id]))
            elif isinstance(argument, ast.JoinedStr):
                parts = [re.escape(p.value) if isinstance(p, ast.Constant) else "[A-Z0-9_]+" for p in argument.values]
                reads.add("".join(parts))
    return {pattern for pattern in reads if pattern.startswith(("COALITION", "[A-Z0-9_]+"))}


def test_every_setting_the_code_reads_is_in_the_readme_settings_tables():
    documented = _documented_settings()
    wildcards = [name[:-1] for name in documented if name.endswith("*")]
    missing = sorted(
        {
            pattern.replace(_HEAD, "").replace("\\", "")
            for pattern in _read_settings()
            if not any(re.fullmatch(pattern, name) for name in documented)
            and not any(re.fullmatch(pattern, prefix + "X") for prefix in wildcards)
        }
    )
    assert len(documented) > 30
    assert not missing, f"the code reads {missing}, which no row of README.md's settings tables names: add them"


def test_the_architecture_points_to_the_domain_guide_inside_the_repository():
    architecture = _read("docs", "ARCHITECTURE.md")
    assert "docs/DOMAIN.md" in architecture and "shared with the team" not in architecture
    assert "## Decisions on open questions" in _read("docs", "DOMAIN.md")
