"""Translation between partners.proto's tier messages and the tier domain (services/partners/tiers.py);
the rest of the service's mapping is in wire.py."""

from __future__ import annotations

from decimal import Decimal

from coalition.partners.v1 import partners_pb2 as pb
from services.common.timeconv import micros_from_request, timestamp_from_micros
from services.partners import model, tiers

_MEASURES = {
    pb.TIER_MEASURE_QUALIFYING_POINTS: tiers.MEASURE_POINTS,
    pb.TIER_MEASURE_QUALIFYING_ACTIVITIES: tiers.MEASURE_ACTIVITIES,
}
_MEASURE_ENUMS = {value: key for key, value in _MEASURES.items()}
_WINDOWS = {
    pb.TIER_WINDOW_CALENDAR_YEAR: tiers.WINDOW_CALENDAR_YEAR,
    pb.TIER_WINDOW_ROLLING_12_MONTHS: tiers.WINDOW_ROLLING_12_MONTHS,
}
_WINDOW_ENUMS = {value: key for key, value in _WINDOWS.items()}
# Wide bounds here, so a multiplier out of the definition's range gets its own reason there.
_MULTIPLIER_PARSED_MAX = Decimal(1_000_000)


def tier_definition(message: pb.TierDefinition) -> tuple[tiers.TierDefinition, bool]:
    """The definition, and whether its effective time was given (unset: now, decided by the use case)."""
    effective_given = message.HasField("effective_time")
    effective_us = micros_from_request(message.effective_time, "definition.effective_time") if effective_given else 0
    levels = tuple(
        tiers.TierLevel(
            name=level.name,
            threshold=level.threshold,
            multiplier=model.parse_decimal(
                level.earn_multiplier,
                "definition.levels.earn_multiplier",
                minimum=-_MULTIPLIER_PARSED_MAX,
                maximum=_MULTIPLIER_PARSED_MAX,
            ),
        )
        for level in message.levels
    )
    definition = tiers.TierDefinition(
        currency_code=message.currency_code,
        effective_from_us=effective_us,
        # An unknown enum maps to "" so the domain refuses it with its own reason.
        measure=_MEASURES.get(message.measure, ""),
        window=_WINDOWS.get(message.window, ""),
        grace_months=message.downgrade_grace_months,
        levels=levels,
    )
    return definition, effective_given


def _level_message(level: tiers.TierLevel) -> pb.TierLevel:
    return pb.TierLevel(name=level.name, threshold=level.threshold, earn_multiplier=str(level.multiplier))


def tier_definition_message(definition: tiers.TierDefinition) -> pb.TierDefinition:
    return pb.TierDefinition(
        currency_code=definition.currency_code,
        effective_time=timestamp_from_micros(definition.effective_from_us),
        measure=_MEASURE_ENUMS[definition.measure],
        window=_WINDOW_ENUMS[definition.window],
        downgrade_grace_months=definition.grace_months,
        levels=[_level_message(level) for level in definition.levels],
        create_time=timestamp_from_micros(definition.create_time_us),
    )


def member_tier_response(
    member_id: str, currency_code: str, status: tiers.TierStatus | None
) -> pb.GetMemberTierResponse:
    response = pb.GetMemberTierResponse(member_id=member_id, currency_code=currency_code)
    if status is None:
        return response
    levels = status.definition.levels
    response.has_tiers = True
    response.tier.CopyFrom(_level_message(levels[status.level]))
    response.tier_position = status.level
    if status.since_us is not None:
        response.since_time.CopyFrom(timestamp_from_micros(status.since_us))
    if status.valid_until_us is not None:
        response.valid_until_time.CopyFrom(timestamp_from_micros(status.valid_until_us))
    response.measure = _MEASURE_ENUMS[status.definition.measure]
    response.window_start_time.CopyFrom(timestamp_from_micros(status.window_start_us))
    response.window_end_time.CopyFrom(timestamp_from_micros(status.window_end_us))
    response.qualifying_amount = status.qualifying
    if status.level + 1 < len(levels):
        response.next_tier.CopyFrom(_level_message(levels[status.level + 1]))
    response.next_tier_needed_amount = status.to_next_level or 0
    response.keep_tier_needed_amount = status.to_keep_level
    return response
