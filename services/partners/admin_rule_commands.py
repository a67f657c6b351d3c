"""coalition-admin's commands for API keys, earn and conversion rules, and members (the
partners, stores and terminals commands and the registry are in admin_commands.py)."""

from __future__ import annotations

import argparse

from google.protobuf.message import Message

from coalition.partners.v1 import partners_pb2 as pb
from services.common import cli
from services.common.timeconv import timestamp_from_micros
from services.partners.admin_commands import (
    BASES,
    Session,
    _alias,
    _enum_word,
    _member,
    _member_arguments,
    _no_arguments,
    _partner_option,
    _partner_page_arguments,
    _with_next_page,
    command,
)


def _key_state(info: pb.ApiKeyInfo) -> str:
    if info.replaced_by_key_id:
        return f"rotated -> {info.replaced_by_key_id}"
    return "revoked" if info.HasField("revoke_time") else "active"


def _key_rows(keys) -> str:
    rows = [
        (
            k.key_id,
            f"...{k.key_hint}" if k.key_hint else "",
            _key_state(k),
            cli.format_time(k.create_time),
            cli.format_time(k.revoke_time),
        )
        for k in keys
    ]
    return cli.format_table(("key id", "ends in", "state", "issued", "revoked"), rows)


def _earn_rule_rows(rules) -> str:
    rows = []
    for rule in rules:
        extras = [f"{m.category} x{m.multiplier}" for m in rule.category_multipliers]
        extras += [f"no {category}" for category in rule.excluded_categories]
        if rule.HasField("promotion") and rule.promotion.kind:
            extras.append("promotion " + _enum_word(pb.PromotionKind, rule.promotion.kind, "PROMOTION_KIND_"))
        rows.append(
            (
                rule.version,
                rule.currency_code,
                f"{rule.base_rate} per {'EUR' if rule.basis == pb.EARN_BASIS_AMOUNT else 'unit'}",
                rule.cap_points_per_transaction or "-",
                cli.format_time(rule.valid_from_time),
                cli.format_time(rule.valid_to_time) or "open",
                "; ".join(extras),
            )
        )
    return cli.format_table(("version", "currency", "base rate", "cap", "valid from", "valid to", "details"), rows)


def _conversion_rule_rows(rules) -> str:
    rows = [
        (
            f"{r.from_currency_code} -> {r.to_currency_code}",
            r.version,
            f"{r.from_units}:{r.to_units}",
            f"+{r.bonus_to_amount} per {r.bonus_block_from_amount}" if r.bonus_block_from_amount else "-",
            f"{r.min_from_amount}..{r.max_from_amount or 'any'} step {r.step_from_amount}",
            r.annual_cap_from_amount or "-",
            cli.format_time(r.valid_from_time),
        )
        for r in rules
    ]
    return cli.format_table(("direction", "version", "ratio", "bonus", "amount", "annual cap", "valid from"), rows)


# ---------------------------------------------------------------- API keys


def _key_shown_once(info: pb.ApiKeyInfo, api_key: str) -> str:
    return (
        f"API key {info.key_id} for partner {info.partner_id}. It is shown ONCE: store it now.\n\n"
        f"    {api_key}\n\n"
        "The partner's systems send it as `authorization: Bearer <key>`. Lost? Revoke "
        f"{info.key_id} and issue a new one."
    )


@command(
    "keys",
    "issue",
    "issue an API key for a partner; the key is printed once",
    examples=(
        "keys issue --partner acme",
        "keys issue --partner acme --request-id acme-key-1  # rerun within 10 minutes: same key",
    ),
    arguments=_partner_option,
    keyed=True,
)
def _keys_issue(session: Session) -> tuple[Message, str]:
    request = pb.IssueApiKeyRequest(partner_id=session.args.partner, request_id=session.request_id)
    response = session.call("IssueApiKey", request)
    return response, _key_shown_once(response.key_info, response.api_key)


def _key_id_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("key_id", help="the key's id (see `keys list`)")
    _partner_option(parser)


@command(
    "keys",
    "rotate",
    "issue a new key and revoke the given one in one step; the new key is printed once",
    examples=("keys rotate key_0123456789abcdef --partner acme",),
    arguments=_key_id_arguments,
    keyed=True,
)
def _keys_rotate(session: Session) -> tuple[Message, str]:
    args = session.args
    request = pb.RotateApiKeyRequest(partner_id=args.partner, key_id=args.key_id, request_id=session.request_id)
    response = session.call("RotateApiKey", request)
    return response, f"revoked {response.revoked_key_info.key_id}\n" + _key_shown_once(
        response.key_info, response.api_key
    )


@command(
    "keys",
    "revoke",
    "revoke a key at once (idempotent)",
    examples=("keys revoke key_0123456789abcdef --partner acme",),
    arguments=_key_id_arguments,
    mutation=True,
)
def _keys_revoke(session: Session) -> tuple[Message, str]:
    args = session.args
    response = session.call("RevokeApiKey", pb.RevokeApiKeyRequest(partner_id=args.partner, key_id=args.key_id))
    return response, _key_rows([response.key_info])


@command(
    "keys",
    "list",
    "a partner's keys: id, last characters, state; never the key",
    examples=("keys list --partner acme",),
    arguments=_partner_page_arguments,
)
def _keys_list(session: Session) -> tuple[Message, str]:
    args = session.args
    request = pb.ListApiKeysRequest(partner_id=args.partner, page_size=args.page_size, page_token=args.page_token)
    response = session.call("ListApiKeys", request)
    return response, _with_next_page(_key_rows(response.keys), response.next_page_token)


# ---------------------------------------------------------------- rules


def _earn_rules_create_arguments(parser: argparse.ArgumentParser) -> None:
    _partner_option(parser)
    parser.add_argument("--base-rate", required=True, help="points per EUR (amount basis) or per unit, e.g. 0.5")
    parser.add_argument(
        "--valid-from",
        type=cli.time_argument,
        required=True,
        help="ISO 8601 with offset, inclusive; give the same value when you retry with the same --request-id",
    )
    parser.add_argument("--valid-to", type=cli.time_argument, help="ISO 8601 with offset, exclusive (default: open)")
    parser.add_argument("--currency", default="PTS", help="PTS (default) or the partner's programme currency")
    parser.add_argument("--basis", choices=sorted(BASES), default="amount", help="what the base rate counts")
    parser.add_argument(
        "--category-multiplier", action="append", default=[], metavar="CATEGORY=MULTIPLIER", help="e.g. produce=2"
    )
    parser.add_argument(
        "--exclude", action="append", default=[], metavar="CATEGORY", help="a category that never earns"
    )
    parser.add_argument("--cap", type=int, default=0, help="most points per transaction (default: no cap)")


@command(
    "earn-rules",
    "create",
    "add a version of a partner's earn rule",
    examples=(
        "earn-rules create --partner acme --base-rate 1 --valid-from 2026-12-01T00:00:00+01:00",
        "earn-rules create --partner acme --base-rate 0.5 --category-multiplier produce=2 --exclude tobacco"
        " --cap 5000 --valid-from 2027-01-01T00:00:00+01:00",
    ),
    arguments=_earn_rules_create_arguments,
    keyed=True,
)
def _earn_rules_create(session: Session) -> tuple[Message, str]:
    args = session.args
    rule = pb.EarnRule(
        partner_id=args.partner,
        currency_code=args.currency,
        basis=BASES[args.basis],
        base_rate=args.base_rate,
        excluded_categories=args.exclude,
        cap_points_per_transaction=args.cap,
        valid_from_time=timestamp_from_micros(args.valid_from),
    )
    for item in args.category_multiplier:
        category, _, multiplier = item.partition("=")
        rule.category_multipliers.add(category=category, multiplier=multiplier)
    if args.valid_to is not None:
        rule.valid_to_time.CopyFrom(timestamp_from_micros(args.valid_to))
    response = session.call("CreateEarnRule", pb.CreateEarnRuleRequest(rule=rule, request_id=session.request_id))
    return response, f"earn rule of {response.rule.partner_id}:\n{_earn_rule_rows([response.rule])}"


@command(
    "earn-rules",
    "list",
    "a partner's earn rule versions, newest first",
    examples=("earn-rules list --partner acme",),
    arguments=_partner_option,
)
def _earn_rules_list(session: Session) -> tuple[Message, str]:
    response = session.call("ListEarnRules", pb.ListEarnRulesRequest(partner_id=session.args.partner))
    return response, _earn_rule_rows(response.rules)


def _conversion_rules_create_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="from_currency", required=True, help="currency converted from, e.g. HOTELPTS")
    parser.add_argument("--to", dest="to_currency", required=True, help="currency converted to, e.g. PTS")
    parser.add_argument("--from-units", type=int, required=True, help="this many source units buy --to-units")
    parser.add_argument("--to-units", type=int, required=True, help="target units bought by --from-units")
    parser.add_argument("--valid-from", type=cli.time_argument, required=True, help="ISO 8601 with offset, inclusive")
    parser.add_argument("--valid-to", type=cli.time_argument, help="ISO 8601 with offset, exclusive (default: open)")
    parser.add_argument("--min", type=int, default=1, help="smallest source amount per conversion (default 1)")
    parser.add_argument("--step", type=int, default=1, help="the source amount must be a multiple of this")
    parser.add_argument("--max", type=int, default=0, help="largest source amount per conversion (default: none)")
    parser.add_argument("--annual-cap", type=int, default=0, help="source units per member and year (default: none)")
    parser.add_argument("--bonus-block", type=int, default=0, help="source units per bonus block (default: no bonus)")
    parser.add_argument("--bonus", type=int, default=0, help="target units added per full bonus block")


@command(
    "conversion-rules",
    "create",
    "add a version of the conversion rule of one direction",
    examples=(
        "conversion-rules create --from SKYMILES --to PTS --from-units 1 --to-units 2 --min 100 --step 100"
        " --valid-from 2026-12-01T00:00:00+01:00",
    ),
    arguments=_conversion_rules_create_arguments,
    keyed=True,
)
def _conversion_rules_create(session: Session) -> tuple[Message, str]:
    args = session.args
    rule = pb.ConversionRule(
        from_currency_code=args.from_currency,
        to_currency_code=args.to_currency,
        from_units=args.from_units,
        to_units=args.to_units,
        bonus_block_from_amount=args.bonus_block,
        bonus_to_amount=args.bonus,
        min_from_amount=args.min,
        step_from_amount=args.step,
        max_from_amount=args.max,
        annual_cap_from_amount=args.annual_cap,
        valid_from_time=timestamp_from_micros(args.valid_from),
    )
    if args.valid_to is not None:
        rule.valid_to_time.CopyFrom(timestamp_from_micros(args.valid_to))
    request = pb.CreateConversionRuleRequest(rule=rule, request_id=session.request_id)
    response = session.call("CreateConversionRule", request)
    return response, _conversion_rule_rows([response.rule])


@command(
    "conversion-rules",
    "list",
    "conversion rules in effect now",
    examples=("conversion-rules list",),
    arguments=_no_arguments,
)
def _conversion_rules_list(session: Session) -> tuple[Message, str]:
    response = session.call("ListConversionRules", pb.ListConversionRulesRequest())
    return response, _conversion_rule_rows(response.rules)


# ---------------------------------------------------------------- members


def _member_lookup_arguments(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--card", help="a card number")
    which.add_argument("--phone", help="a phone number (E.164)")
    which.add_argument("--email", help="an e-mail address")


@command(
    "members",
    "lookup",
    "find a member by card, phone or e-mail",
    examples=("members lookup --card 6001000000000001",),
    arguments=_member_lookup_arguments,
)
def _members_lookup(session: Session) -> tuple[Message, str]:
    response = session.call("LookupMember", pb.LookupMemberRequest(alias=_alias(session.args)))
    member = response.member
    rows = [(member.member_id, cli.format_time(member.create_time), member.alias_count)]
    return response, cli.format_table(("member", "enrolled", "cards and aliases"), rows)


@command(
    "members",
    "balances",
    "a member's balance in every currency",
    examples=(
        "members balances --card 6001000000000001",
        "members balances --member-id m-3f9a",
    ),
    arguments=_member_arguments,
)
def _members_balances(session: Session) -> tuple[Message, str]:
    response = session.call("GetMemberBalance", pb.GetMemberBalanceRequest(member=_member(session.args)))
    rows = [(b.currency_code, b.posted, b.pending, b.available) for b in response.balances]
    table = cli.format_table(("currency", "posted", "held", "available"), rows)
    return response, f"member {response.member_id}\n{table}"


def _members_activity_arguments(parser: argparse.ArgumentParser) -> None:
    _member_arguments(parser)
    parser.add_argument("--currency", default="", help="one currency (default: every wallet)")
    parser.add_argument("--limit", type=int, default=0, help="most recent movements, 1..200 (default 50)")


@command(
    "members",
    "activity",
    "a member's recent wallet movements, newest first",
    examples=("members activity --card 6001000000000001 --currency PTS --limit 20",),
    arguments=_members_activity_arguments,
)
def _members_activity(session: Session) -> tuple[Message, str]:
    args = session.args
    request = pb.ListMemberActivityRequest(member=_member(args), currency_code=args.currency, page_size=args.limit)
    response = session.call("ListMemberActivity", request)
    rows = [
        (
            cli.format_time(item.commit_time),
            _enum_word(pb.ActivityKind, item.kind, "ACTIVITY_KIND_"),
            item.currency_code,
            item.posted_change,
            item.pending_change,
            item.partner_id,
            item.store_id,
            item.receipt_id,
        )
        for item in response.items
    ]
    headers = ("time", "kind", "currency", "posted", "held", "partner", "store", "receipt")
    return response, f"member {response.member_id}, newest first\n{cli.format_table(headers, rows)}"
