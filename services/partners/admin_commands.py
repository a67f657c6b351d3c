"""The commands of coalition-admin (services/partners/admin_cli.py): one function per command, each
registered with its group, name, summary, examples and arguments, making one PartnersService call
and answering the response (printed as JSON with --json) and the text of a readable table."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from google.protobuf.message import Message

from coalition.partners.v1 import partners_pb2 as pb
from coalition.partners.v1 import partners_pb2_grpc
from services.common import cli

PROG = "coalition-admin"
CALL_DEADLINE_SECONDS = 30.0

KINDS = {
    "retailer": pb.PARTNER_KIND_RETAILER,
    "fuel": pb.PARTNER_KIND_FUEL,
    "hotel": pb.PARTNER_KIND_HOTEL,
    "airline": pb.PARTNER_KIND_AIRLINE,
}
BASES = {"amount": pb.EARN_BASIS_AMOUNT, "quantity": pb.EARN_BASIS_QUANTITY}

GROUP_SUMMARIES = {
    "partners": "register, suspend, reactivate, show and list partners",
    "stores": "create and list a partner's stores",
    "terminals": "create and list the terminals of stores",
    "keys": "issue, rotate, revoke and list a partner's API keys",
    "earn-rules": "create and list a partner's earn rules",
    "conversion-rules": "create and list conversion rules",
    "members": "look up members, show their balances and activity",
}


@dataclass
class Session:
    """What a command needs: its arguments, its request id and one call to the partners service."""

    args: argparse.Namespace
    stub: partners_pb2_grpc.PartnersServiceStub
    request_id: str

    def call(self, method: str, request: Message) -> Message:
        metadata = cli.admin_metadata(self.request_id)
        return getattr(self.stub, method)(request, metadata=metadata, timeout=CALL_DEADLINE_SECONDS)


Run = Callable[[Session], tuple[Message, str]]


@dataclass(frozen=True)
class Command:
    group: str
    name: str
    summary: str
    examples: tuple[str, ...]  # command lines after the program's name
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Run
    mutation: bool  # takes --request-id (sent as x-request-id, for the service's log line)
    keyed: bool  # the request id is the call's idempotency key: made up when not given, and printed


COMMANDS: list[Command] = []


def command(group: str, name: str, summary: str, *, examples, arguments, mutation=False, keyed=False):
    def register(run: Run) -> Run:
        if group not in GROUP_SUMMARIES:
            raise ValueError(f"unknown command group {group!r}")
        COMMANDS.append(Command(group, name, summary, tuple(examples), arguments, run, mutation or keyed, keyed))
        return run

    return register


def _enum_word(enum, value: int, prefix: str) -> str:
    return enum.Name(value).removeprefix(prefix).lower()


# ---------------------------------------------------------------- rendering


def _partner_rows(partners) -> str:
    rows = [
        (
            p.partner_id,
            _enum_word(pb.PartnerKind, p.kind, "PARTNER_KIND_"),
            p.display_name,
            p.programme_currency_code or "-",
            _enum_word(pb.PartnerStatus, p.status, "PARTNER_STATUS_"),
            cli.format_time(p.create_time),
        )
        for p in partners
    ]
    return cli.format_table(("partner", "kind", "name", "currency", "status", "registered"), rows)


def _with_next_page(text: str, token: str) -> str:
    return text + (f"\nmore: rerun with --page-token {token}" if token else "")


# ---------------------------------------------------------------- arguments


def _page_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--page-size", type=int, default=0, help="rows per page, 1..500 (default 100)")
    parser.add_argument("--page-token", default="", help="next_page_token of the previous page")


def _partner_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--partner", required=True, help="the partner's id")


def _member_arguments(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--card", help="a card number of the member")
    which.add_argument("--phone", help="a phone number of the member (E.164, e.g. +491701234567)")
    which.add_argument("--email", help="an e-mail address of the member")
    which.add_argument("--member-id", help="the member's id")


def _alias(args) -> pb.Alias:
    if args.card:
        return pb.Alias(kind=pb.ALIAS_KIND_CARD, value=args.card)
    if args.phone:
        return pb.Alias(kind=pb.ALIAS_KIND_PHONE, value=args.phone)
    return pb.Alias(kind=pb.ALIAS_KIND_EMAIL, value=args.email)


def _member(args) -> pb.MemberIdentity:
    if args.member_id:
        return pb.MemberIdentity(member_id=args.member_id)
    return pb.MemberIdentity(alias=_alias(args))


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    pass


# ---------------------------------------------------------------- partners


def _partners_register_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("partner_id", help="stable id, 1..32 characters of a-z 0-9 and -")
    parser.add_argument("--kind", choices=sorted(KINDS), required=True)
    parser.add_argument("--name", required=True, help="name shown to people")
    parser.add_argument("--currency", default="", help="code of the partner's own programme currency, if any")


@command(
    "partners",
    "register",
    "register a partner and provision its ledger accounts (idempotent on its id)",
    examples=(
        'partners register acme --kind retailer --name "Acme Stores"',
        'partners register skyhigh --kind airline --name "Sky High" --currency SKYMILES',
    ),
    arguments=_partners_register_arguments,
    mutation=True,
)
def _partners_register(session: Session) -> tuple[Message, str]:
    args = session.args
    partner = pb.Partner(
        partner_id=args.partner_id, kind=KINDS[args.kind], display_name=args.name, programme_currency_code=args.currency
    )
    response = session.call("RegisterPartner", pb.RegisterPartnerRequest(partner=partner))
    verdict = "registered" if response.created else "already registered identically"
    return response, f"{verdict}:\n{_partner_rows([response.partner])}"


def _partner_id_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("partner_id", help="the partner's id")


def _partner_status_change(session: Session, method: str, request_type, verb: str) -> tuple[Message, str]:
    response = session.call(method, request_type(partner_id=session.args.partner_id))
    return response, f"{verb}:\n{_partner_rows([response.partner])}"


@command(
    "partners",
    "suspend",
    "stop a partner from earning, redeeming and converting (idempotent)",
    examples=("partners suspend acme",),
    arguments=_partner_id_argument,
    mutation=True,
)
def _partners_suspend(session: Session) -> tuple[Message, str]:
    return _partner_status_change(session, "SuspendPartner", pb.SuspendPartnerRequest, "suspended")


@command(
    "partners",
    "reactivate",
    "lift a partner's suspension (idempotent)",
    examples=("partners reactivate acme",),
    arguments=_partner_id_argument,
    mutation=True,
)
def _partners_reactivate(session: Session) -> tuple[Message, str]:
    return _partner_status_change(session, "ReactivatePartner", pb.ReactivatePartnerRequest, "active")


@command(
    "partners",
    "show",
    "one partner",
    examples=(
        "partners show acme",
        "partners show acme --json",
    ),
    arguments=_partner_id_argument,
)
def _partners_show(session: Session) -> tuple[Message, str]:
    response = session.call("GetPartner", pb.GetPartnerRequest(partner_id=session.args.partner_id))
    return response, _partner_rows([response.partner])


@command(
    "partners",
    "list",
    "partners by id",
    examples=(
        "partners list",
        "partners list --page-size 20",
    ),
    arguments=_page_arguments,
)
def _partners_list(session: Session) -> tuple[Message, str]:
    args = session.args
    response = session.call(
        "ListPartners", pb.ListPartnersRequest(page_size=args.page_size, page_token=args.page_token)
    )
    return response, _with_next_page(_partner_rows(response.partners), response.next_page_token)


# ---------------------------------------------------------------- stores and terminals


def _stores_create_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("store_id", help="globally unique id, 1..64 characters of A-Z a-z 0-9 and ._-")
    _partner_option(parser)
    parser.add_argument("--name", required=True, help="name shown to people")


@command(
    "stores",
    "create",
    "register a store of a partner (idempotent on the store id)",
    examples=('stores create acme-berlin-01 --partner acme --name "Acme Berlin Mitte"',),
    arguments=_stores_create_arguments,
    mutation=True,
)
def _stores_create(session: Session) -> tuple[Message, str]:
    args = session.args
    store = pb.Store(store_id=args.store_id, partner_id=args.partner, display_name=args.name)
    response = session.call("CreateStore", pb.CreateStoreRequest(store=store))
    verdict = "created" if response.created else "already there identically"
    return response, f"store {response.store.store_id} of {response.store.partner_id}: {verdict}"


def _partner_page_arguments(parser: argparse.ArgumentParser) -> None:
    _partner_option(parser)
    _page_arguments(parser)


@command(
    "stores",
    "list",
    "a partner's stores",
    examples=("stores list --partner acme",),
    arguments=_partner_page_arguments,
)
def _stores_list(session: Session) -> tuple[Message, str]:
    args = session.args
    request = pb.ListStoresRequest(partner_id=args.partner, page_size=args.page_size, page_token=args.page_token)
    response = session.call("ListStores", request)
    table = cli.format_table(
        ("store", "partner", "name"), [(s.store_id, s.partner_id, s.display_name) for s in response.stores]
    )
    return response, _with_next_page(table, response.next_page_token)


def _terminals_create_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("store_id", help="the store")
    parser.add_argument("terminal_id", help="id unique within the store, 1..64 characters of A-Z a-z 0-9 and ._-")


@command(
    "terminals",
    "create",
    "register a till, pump or desk of a store (idempotent)",
    examples=("terminals create acme-berlin-01 till-1",),
    arguments=_terminals_create_arguments,
    mutation=True,
)
def _terminals_create(session: Session) -> tuple[Message, str]:
    args = session.args
    terminal = pb.Terminal(store_id=args.store_id, terminal_id=args.terminal_id)
    response = session.call("CreateTerminal", pb.CreateTerminalRequest(terminal=terminal))
    verdict = "created" if response.created else "already there"
    return response, f"terminal {args.terminal_id} of store {args.store_id}: {verdict}"


def _terminals_list_arguments(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--store", default="", help="the terminals of this store")
    which.add_argument("--partner", default="", help="the terminals of every store of this partner")
    _page_arguments(parser)


@command(
    "terminals",
    "list",
    "the terminals of a store or of all a partner's stores",
    examples=(
        "terminals list --store acme-berlin-01",
        "terminals list --partner acme",
    ),
    arguments=_terminals_list_arguments,
)
def _terminals_list(session: Session) -> tuple[Message, str]:
    args = session.args
    request = pb.ListTerminalsRequest(
        store_id=args.store, partner_id=args.partner, page_size=args.page_size, page_token=args.page_token
    )
    response = session.call("ListTerminals", request)
    table = cli.format_table(("store", "terminal"), [(t.store_id, t.terminal_id) for t in response.terminals])
    return response, _with_next_page(table, response.next_page_token)


# The keys, rules and members commands register themselves on import (after the registry above).
from services.partners import admin_rule_commands  # noqa: E402, F401
