"""Operator use cases for rules: earn rule versions per partner and conversion rule versions per
programme pair. Each create is once per (caller, request_id); a new version applies to calls
timed after its valid_from, and every partners process sees it within the facts' freshness bound."""

from __future__ import annotations

import dataclasses

import structlog
from sqlalchemy import Connection

from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.common.ledger_client import DEBIT, AccountSpec
from services.partners import admin_requests, converting, earn_pricing, model
from services.partners.app import App
from services.partners.partners_admin import currency_owner
from services.partners.store import partners as partner_store
from services.partners.store import rules as rule_store

_log = structlog.get_logger("partners")


_EARN_RULE_FIELDS = {
    "cap_points": "cap_points_per_transaction",
    "valid_from_us": "valid_from_time",
    "valid_to_us": "valid_to_time",
}


def _earn_rule_content(rule: earn_pricing.EarnRule) -> dict[str, object]:
    """The request's rule under its proto field names, so a changed field can be named."""
    values = rule_store.earn_rule_values(rule, 0)
    del values["version"], values["create_time_us"]
    return {f"rule.{_EARN_RULE_FIELDS.get(name, name)}": value for name, value in values.items()}


async def create_earn_rule(
    app: App, caller_id: str, request_id: str, rule: earn_pricing.EarnRule
) -> earn_pricing.EarnRule:
    """A new version of the partner's rule, once per (caller, request_id)."""
    model.check_request_id(request_id)
    model.check_partner_id(rule.partner_id, "rule.partner_id")
    earn_pricing.check_earn_rule(rule)
    content = _earn_rule_content(rule)
    now = app.clock()

    def work(connection: Connection) -> tuple[earn_pricing.EarnRule, bool]:
        done = partner_store.admin_request(connection, caller_id, admin_requests.CREATE_EARN_RULE, request_id)
        if done is not None:
            admin_requests.check_same_content(done, content, request_id)
            return rule_store.get_earn_rule(connection, rule.partner_id, int(done.result_id)), False
        partner = partner_store.get_partner(connection, rule.partner_id)
        if partner is None:
            raise NotFound("PARTNER_NOT_FOUND", "no partner with this id", partner_id=rule.partner_id)
        allowed = {model.COMMON_CURRENCY, partner.programme_currency_code}
        if rule.currency_code not in allowed:
            raise InvalidArgument(
                "CURRENCY_NOT_ISSUABLE",
                "a partner issues PTS or its own programme currency",
                currency=rule.currency_code,
            )
        version = rule_store.next_earn_rule_version(connection, rule.partner_id)
        stored = dataclasses.replace(rule, version=version)
        rule_store.insert_earn_rule(connection, **rule_store.earn_rule_values(stored, now))
        partner_store.insert_admin_request(
            connection,
            caller_id=caller_id,
            operation=admin_requests.CREATE_EARN_RULE,
            request_id=request_id,
            content=admin_requests.content_json(content),
            result_id=str(version),
            create_time_us=now,
        )
        return stored, True

    stored, created = await app.write(work, retry_unique_violation=True)
    app.facts.earn_rules.forget(rule.partner_id)
    if created:
        _log.info("earn_rule_created", target_partner_id=rule.partner_id, version=stored.version)
    return stored


async def list_earn_rules(app: App, partner_id: str) -> list[earn_pricing.EarnRule]:
    return await app.read(lambda connection: rule_store.earn_rules_of(connection, partner_id))


_CONVERSION_RULE_FIELDS = {
    "from_currency": "from_currency_code",
    "to_currency": "to_currency_code",
    "valid_from_micros": "valid_from_time",
    "valid_to_micros": "valid_to_time",
}


def _conversion_rule_content(rule: converting.ConversionRule) -> dict[str, object]:
    values = dataclasses.asdict(rule)
    del values["version"]
    return {f"rule.{_CONVERSION_RULE_FIELDS.get(name, name)}": value for name, value in values.items()}


async def create_conversion_rule(
    app: App, caller_id: str, request_id: str, rule: converting.ConversionRule
) -> converting.ConversionRule:
    """A new version of the direction's rule, once per (caller, request_id)."""
    model.check_request_id(request_id)
    model.check_currency_code(rule.from_currency, "rule.from_currency_code")
    model.check_currency_code(rule.to_currency, "rule.to_currency_code")
    converting.check_conversion_rule(rule)
    content = _conversion_rule_content(rule)

    def owners(connection: Connection) -> tuple[str | None, str | None]:
        return currency_owner(connection, rule.from_currency), currency_owner(connection, rule.to_currency)

    from_owner, to_owner = await app.read(owners)
    if from_owner is None or to_owner is None:
        raise FailedPrecondition(
            "CURRENCY_NOT_FOUND",
            "both currencies must be PTS or a registered partner's programme currency",
            from_currency=rule.from_currency,
            to_currency=rule.to_currency,
        )
    await app.ledger.ensure_accounts(
        [
            AccountSpec(
                model.exchange_account_id(rule.from_currency, rule.to_currency),
                rule.from_currency,
                DEBIT,
                model.OPERATOR,
                "operator_exchange",
            ),
            AccountSpec(
                model.exchange_account_id(rule.to_currency, rule.from_currency),
                rule.to_currency,
                DEBIT,
                model.OPERATOR,
                "operator_exchange",
            ),
        ]
    )
    now = app.clock()

    def work(connection: Connection) -> tuple[converting.ConversionRule, bool]:
        done = partner_store.admin_request(connection, caller_id, admin_requests.CREATE_CONVERSION_RULE, request_id)
        if done is not None:
            admin_requests.check_same_content(done, content, request_id)
            found = rule_store.get_conversion_rule(
                connection, rule.from_currency, rule.to_currency, int(done.result_id)
            )
            return found, False
        version = rule_store.next_conversion_rule_version(connection, rule.from_currency, rule.to_currency)
        stored = dataclasses.replace(rule, version=version)
        rule_store.insert_conversion_rule(connection, stored, now)
        partner_store.insert_admin_request(
            connection,
            caller_id=caller_id,
            operation=admin_requests.CREATE_CONVERSION_RULE,
            request_id=request_id,
            content=admin_requests.content_json(content),
            result_id=str(version),
            create_time_us=now,
        )
        return stored, True

    stored, created = await app.write(work, retry_unique_violation=True)
    app.facts.conversion_rules.forget((rule.from_currency, rule.to_currency))
    if not created:
        return stored
    _log.info(
        "conversion_rule_created",
        from_currency=rule.from_currency,
        to_currency=rule.to_currency,
        version=stored.version,
    )
    return stored


async def list_conversion_rules(app: App) -> list[converting.ConversionRule]:
    """The version in effect now of each direction."""
    rules = await app.read(rule_store.conversion_rules_of)
    now = app.clock()
    by_direction: dict[tuple[str, str], list[converting.ConversionRule]] = {}
    for rule in rules:
        by_direction.setdefault((rule.from_currency, rule.to_currency), []).append(rule)
    current = [model.select_version(versions, now) for _, versions in sorted(by_direction.items())]
    return [rule for rule in current if rule is not None]
