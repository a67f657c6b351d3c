"""Tier use cases: the operator's versions of a currency's tier definition, their list, and a
member's tier as members see it. A version applies from its effective time and is never in the
past (like the ledger's expiry policy versions), so no earn already priced or member already
evaluated changes."""

from __future__ import annotations

import dataclasses

import structlog
from sqlalchemy import Connection

from services.common.errors import AlreadyExists, InvalidArgument, NotFound, PermissionDenied
from services.partners import model, tier_book, tiers
from services.partners.access import Caller
from services.partners.app import App
from services.partners.members import MemberRef, resolve_member
from services.partners.partners_admin import currency_owner
from services.partners.store import tiers as tier_store

_log = structlog.get_logger("partners")
DEFINITIONS_LISTED_MAX = 500


async def set_tier_definition(
    app: App, definition: tiers.TierDefinition, effective_given: bool
) -> tuple[tiers.TierDefinition, bool]:
    """Store `definition` (effective now when not given); (the stored version, created)."""
    model.check_currency_code(definition.currency_code, "definition.currency_code")
    tiers.check_definition(definition)
    now = app.clock()
    version = definition if effective_given else dataclasses.replace(definition, effective_from_us=now)

    def work(connection: Connection) -> tuple[tiers.TierDefinition, bool]:
        if currency_owner(connection, version.currency_code) is None:
            raise NotFound(
                "CURRENCY_NOT_FOUND",
                "the currency must be PTS or a registered partner's programme currency",
                currency_code=version.currency_code,
            )
        existing = tier_store.get_definition(connection, version.currency_code, version.effective_from_us)
        if existing is not None:
            if dataclasses.replace(existing, create_time_us=0) != dataclasses.replace(version, create_time_us=0):
                raise AlreadyExists(
                    "TIER_DEFINITION_EXISTS_WITH_DIFFERENT_CONTENT",
                    f"{version.currency_code} already has another tier definition from this effective_time",
                    field="definition.effective_time",
                )
            return existing, False
        if version.effective_from_us < now:
            raise InvalidArgument(
                "EFFECTIVE_TIME_IN_PAST",
                "effective_time is in the past: a tier definition applies from its effective_time on; "
                "leave it unset for now",
                field="definition.effective_time",
            )
        stored = dataclasses.replace(version, create_time_us=now)
        tier_store.insert_definition(connection, stored)
        return stored, True

    stored, created = await app.write(work, retry_unique_violation=True)
    app.facts.tier_definitions.forget(stored.currency_code)
    if created:
        _log.info(
            "tier_definition_set",
            currency=stored.currency_code,
            effective_from_us=stored.effective_from_us,
            levels=len(stored.levels),
        )
    return stored, created


async def list_tier_definitions(app: App, caller: Caller, currency_code: str) -> list[tiers.TierDefinition]:
    """The operator's: any currency, or every one; a partner's: PTS and its own programme currency."""
    visible = None if caller.is_admin else sorted({model.COMMON_CURRENCY, caller.programme_currency} - {""})
    if currency_code:
        model.check_currency_code(currency_code, "currency_code")
        check_visible(caller, currency_code)
    currencies = [currency_code] if currency_code else visible

    def work(connection: Connection) -> list[tiers.TierDefinition]:
        if currencies is None:
            return tier_store.all_definitions(connection, DEFINITIONS_LISTED_MAX)
        found = [definition for code in currencies for definition in tier_store.definitions_of(connection, code)]
        return found[:DEFINITIONS_LISTED_MAX]

    return await app.read(work)


def check_visible(caller: Caller, currency_code: str) -> None:
    """A partner reads PTS and its own programme currency only (another's is that partner's data)."""
    if not caller.is_admin and currency_code not in (model.COMMON_CURRENCY, caller.programme_currency):
        raise PermissionDenied(
            "OTHER_PARTNER_CURRENCY",
            f"a partner may read {model.COMMON_CURRENCY} and its own programme currency only",
            currency_code=currency_code,
        )


async def member_tier(
    app: App, caller: Caller, ref: MemberRef, currency_code: str
) -> tuple[str, tiers.TierStatus | None]:
    """The member's tier in the currency now (None: the currency has no tiers in effect)."""
    model.check_currency_code(currency_code, "currency_code")
    check_visible(caller, currency_code)
    now = app.clock()

    def work(connection: Connection) -> tuple[str, tiers.TierStatus | None]:
        member_id = resolve_member(connection, app, ref).member_id
        definition = tier_book.definition_at(connection, app, currency_code, now)
        if definition is None:
            return member_id, None
        found = tier_store.member_tiers_of(connection, [member_id], lock=False).get((member_id, currency_code))
        state, months = (found.state, found.months) if found is not None else (tiers.new_state(now), {})
        return member_id, tiers.status(definition, state, months, now, app.time_zone)

    return await app.read(work)
