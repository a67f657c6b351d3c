"""The operator's lists (ListStores, ListTerminals, ListApiKeys) and coalition-admin, through the
real ledger and partners servers on SQLite and PostgreSQL.

The CLI runs in-process (`admin_cli.main(argv)`) with COALITION_PARTNERS_ADDRESS pointing at the
test server; it dials with the operator's development certificate, as `make run`'s tools do.
"""

from __future__ import annotations

import json
import uuid

import grpc
import pytest

from coalition.partners.v1 import partners_pb2 as pb
from services.partners import admin_cli
from services.partners.admin_commands import COMMANDS, GROUP_SUMMARIES
from tests.partners.conftest import ADMIN_KEY, unique

Code = grpc.StatusCode


def _all_pages(coalition, method: str, request, field: str, page_size: int) -> list:
    """Every item of a list, page by page, checking that no page is larger than asked."""
    items, request.page_size = [], page_size
    while True:
        response = coalition.call(method, request)
        page = list(getattr(response, field))
        assert len(page) <= page_size
        items += page
        if not response.next_page_token:
            return items
        request.page_token = response.next_page_token


def test_operator_lists_page_through_stores_terminals_and_keys(coalition):
    shop, other = coalition.register_partner(base_rate=None), coalition.register_partner(base_rate=None)
    branches = [unique("s") for _ in range(2)]
    for store_id in branches:
        store = pb.Store(store_id=store_id, partner_id=shop.partner_id, display_name="Branch")
        coalition.call("CreateStore", pb.CreateStoreRequest(store=store))
        terminal = pb.Terminal(store_id=store_id, terminal_id="till-9")
        coalition.call("CreateTerminal", pb.CreateTerminalRequest(terminal=terminal))
    stores = sorted([shop.store_id, *branches])
    request = pb.ListStoresRequest(partner_id=shop.partner_id)
    assert [s.store_id for s in _all_pages(coalition, "ListStores", request, "stores", 2)] == stores
    by_partner = pb.ListTerminalsRequest(partner_id=shop.partner_id)
    terminals = [
        (t.store_id, t.terminal_id) for t in _all_pages(coalition, "ListTerminals", by_partner, "terminals", 1)
    ]
    assert terminals == sorted(terminals) and len(terminals) == 3 and other.store_id not in dict(terminals)
    by_store = pb.ListTerminalsRequest(store_id=shop.store_id)
    assert [t.terminal_id for t in coalition.call("ListTerminals", by_store).terminals] == [shop.terminal_id]

    rotated = coalition.call(
        "RotateApiKey", pb.RotateApiKeyRequest(partner_id=shop.partner_id, key_id=shop.key_id, request_id=unique("r"))
    )
    keys = _all_pages(coalition, "ListApiKeys", pb.ListApiKeysRequest(partner_id=shop.partner_id), "keys", 1)
    assert [k.key_id for k in keys] == [shop.key_id, rotated.key_info.key_id]
    assert keys[0].replaced_by_key_id == rotated.key_info.key_id and keys[0].HasField("revoke_time")
    assert keys[0].key_hint == shop.key[-4:] and keys[1].key_hint == rotated.api_key[-4:]
    assert not keys[1].HasField("revoke_time")
    # The listing never carries a key or its hash: ApiKeyInfo has no field for either.
    assert {field.name for field in pb.ApiKeyInfo.DESCRIPTOR.fields}.isdisjoint({"api_key", "key_hash"})


def test_operator_lists_refuse_partner_keys_unknown_owners_and_foreign_tokens(coalition):
    shop = coalition.register_partner(base_rate=None)
    lists = [
        ("ListStores", pb.ListStoresRequest(partner_id=shop.partner_id)),
        ("ListTerminals", pb.ListTerminalsRequest(partner_id=shop.partner_id)),
        ("ListApiKeys", pb.ListApiKeysRequest(partner_id=shop.partner_id)),
    ]
    for method, request in lists:
        assert coalition.error(method, request, shop.key) == (Code.PERMISSION_DENIED, "ADMIN_REQUIRED"), method
        request.page_token = "bm90LWEtdG9rZW4"
        assert coalition.error(method, request) == (Code.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN"), method
        request.page_token, request.partner_id = "", "no-such-partner"
        assert coalition.error(method, request) == (Code.NOT_FOUND, "PARTNER_NOT_FOUND"), method
    unknown_store = pb.ListTerminalsRequest(store_id="no-such-store")
    assert coalition.error("ListTerminals", unknown_store) == (Code.NOT_FOUND, "STORE_NOT_FOUND")
    both = pb.ListTerminalsRequest(store_id=shop.store_id, partner_id=shop.partner_id)
    assert coalition.error("ListTerminals", both) == (Code.INVALID_ARGUMENT, "STORE_OR_PARTNER_REQUIRED")
    too_large = pb.ListStoresRequest(partner_id=shop.partner_id, page_size=501)
    assert coalition.error("ListStores", too_large) == (Code.INVALID_ARGUMENT, "INVALID_PAGE_SIZE")


# ---------------------------------------------------------------- coalition-admin


@pytest.fixture
def admin(coalition, monkeypatch, capsys):
    """coalition-admin against the test server: run(*argv) -> (exit status, stdout, stderr)."""
    monkeypatch.setenv("COALITION_PARTNERS_ADDRESS", coalition.address)
    monkeypatch.setenv("COALITION_ADMIN_API_KEY", ADMIN_KEY)

    def run(*argv: str) -> tuple[int, str, str]:
        status = admin_cli.main(list(argv))
        captured = capsys.readouterr()
        return status, captured.out, captured.err

    return run


def _key_from(output: str) -> str:
    """The secret as the CLI prints it: alone on an indented line."""
    return next(line.strip() for line in output.splitlines() if line.startswith("    cpk_"))


def test_a_partner_onboarded_with_coalition_admin_alone_earns_at_its_till(coalition, admin):
    partner_id, store_id = unique("acme"), unique("acme-berlin")
    assert admin("partners", "register", partner_id, "--kind", "retailer", "--name", "Acme Stores")[0] == 0
    assert admin("stores", "create", store_id, "--partner", partner_id, "--name", "Acme Berlin")[0] == 0
    assert admin("terminals", "create", store_id, "till-1")[0] == 0
    status, out, err = admin("keys", "issue", "--partner", partner_id)
    assert status == 0 and "shown ONCE" in out and "request id: " in err
    api_key = _key_from(out)
    rule = ("earn-rules", "create", "--partner", partner_id, "--base-rate", "1")
    status, out, _ = admin(*rule, "--valid-from", "2026-01-01T00:00:00+01:00", "--request-id", "acme-rule-1")
    assert status == 0 and "1 per EUR" in out

    member_id, card = coalition.enroll()
    earn = pb.EarnRequest(
        request_id=unique("earn"),
        point_of_sale=pb.PointOfSale(store_id=store_id, terminal_id="till-1"),
        receipt_id="0001",
        member=pb.MemberIdentity(member_id=member_id),
        lines=[pb.BasketLine(line_number=1, sku="apples", category="produce", quantity=1000, amount=1999)],
    )
    assert coalition.call("Earn", earn, key=api_key).pricing.points == 19

    status, out, _ = admin("members", "balances", "--card", card, "--json")
    assert status == 0
    balances = json.loads(out)
    assert balances["member_id"] == member_id
    assert {"currency_code": "PTS", "posted": "19", "pending": "0", "available": "19"} in balances["balances"]
    status, out, _ = admin("keys", "list", "--partner", partner_id, "--json")
    assert status == 0 and json.loads(out)["keys"][0]["key_hint"] == api_key[-4:]
    assert api_key not in out
    status, out, _ = admin("members", "activity", "--card", card)
    assert status == 0 and "earn" in out and store_id in out


def test_coalition_admin_retries_safely_and_prints_refusals_with_their_reason(coalition, admin):
    shop = coalition.register_partner(base_rate=None)
    request_id = str(uuid.uuid4())
    first = admin("keys", "issue", "--partner", shop.partner_id, "--request-id", request_id)
    again = admin("keys", "issue", "--partner", shop.partner_id, "--request-id", request_id)
    assert first[0] == again[0] == 0 and _key_from(first[1]) == _key_from(again[1])
    status, _, err = admin("partners", "show", "no-such-partner")
    assert status == 1 and "NOT_FOUND [PARTNER_NOT_FOUND]" in err
    status, out, _ = admin("stores", "list", "--partner", shop.partner_id, "--json")
    assert status == 0 and json.loads(out) == {
        "stores": [{"store_id": shop.store_id, "partner_id": shop.partner_id, "display_name": "Main"}],
        "next_page_token": "",
    }
    assert admin("partners", "register", "x", "--kind", "bank", "--name", "X")[0] == 2  # usage


def test_every_coalition_admin_command_has_help_with_an_example(capsys):
    commands = [(group,) for group in GROUP_SUMMARIES] + [(c.group, c.name) for c in COMMANDS]
    assert len(COMMANDS) == 20  # partners 5, stores 2, terminals 2, keys 4, rules 2 + 2, members 3
    for words in [(), *commands]:
        assert admin_cli.main([*words, "--help"]) == 0
        assert "Example" in capsys.readouterr().out, words
