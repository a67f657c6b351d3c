"""Abuse limits per partner API key, checked right after the key is authenticated and before
any work, so a refused call reads and writes nothing.

Two token buckets per key (services/common/token_buckets.py), in this process's memory:
- every call made with a partner key takes a token from the key's call bucket. The operator's
  admin key is not limited: it is one trusted credential, and a limit could lock the operator
  out while an incident is being handled;
- a member read or alias claim by phone or e-mail (LookupMember, GetMemberBalance,
  ListMemberActivity, EnrollMember, AttachAlias: ALIAS_IN_USE answers a look-up) also takes
  one from a much smaller bucket. Each answers whether a phone number or address belongs
  to a member, so without a tight limit a partner (or whoever holds its key) can enumerate
  phone numbers; limiting LookupMember alone would only move the probe to the other two. A card number is printed on the
  card and is what tills scan, so card look-ups only take from the call bucket.

The buckets are per process: with N partners processes a key may make N times the rate in
total. Settings are read once at start (services/partners/server.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from services.common.errors import RateLimited
from services.common.token_buckets import Rate, TokenBuckets
from services.partners.facts import API_KEYS_MAX

if TYPE_CHECKING:
    from services.partners.access import Caller

# Defaults: above what one partners process answers on a small machine, because make bench
# drives one key per partner with 64 calls in flight and must never be limited (about 700
# cheap calls/s were measured on 2 cores). Production sets a few times its busiest partner's
# peak (services/partners/README.md, "Abuse limits").
CALLS_PER_SECOND_DEFAULT = 5_000
CALLS_BURST_DEFAULT = 10_000
# A till looks a member up by phone or e-mail only when the card is missing: 2 per second on
# average per key. Probing a million phone numbers then takes one key almost 6 days per process.
LOOKUPS_BY_PHONE_OR_EMAIL_PER_MINUTE_DEFAULT = 120
LOOKUPS_BY_PHONE_OR_EMAIL_BURST_DEFAULT = 20
# A bucket per key the process can know at once (the cache of API keys has the same bound).
KEYS_MAX = API_KEYS_MAX
CALLS_DEFAULT = Rate(CALLS_PER_SECOND_DEFAULT, 1, CALLS_BURST_DEFAULT)
LOOKUPS_BY_PHONE_OR_EMAIL_DEFAULT = Rate(
    LOOKUPS_BY_PHONE_OR_EMAIL_PER_MINUTE_DEFAULT, 60, LOOKUPS_BY_PHONE_OR_EMAIL_BURST_DEFAULT
)
PROBING_ALIAS_KINDS = frozenset({"phone", "email"})


class RateLimits:
    def __init__(
        self,
        calls: Rate = CALLS_DEFAULT,
        lookups_by_phone_or_email: Rate = LOOKUPS_BY_PHONE_OR_EMAIL_DEFAULT,
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self.calls = TokenBuckets(calls, KEYS_MAX, clock)
        self.lookups_by_phone_or_email = TokenBuckets(lookups_by_phone_or_email, KEYS_MAX, clock)

    def admit_call(self, caller: Caller) -> None:
        """Every call of a partner key; RESOURCE_EXHAUSTED `RATE_LIMITED` over the key's rate."""
        if caller.is_admin:
            return
        _take(self.calls, caller, "calls", "this API key made more than")

    def admit_member_lookup(self, caller: Caller, alias_kind: str) -> None:
        """A member read (LookupMember, GetMemberBalance, ListMemberActivity) by phone or e-mail,
        on top of admit_call's token."""
        if caller.is_admin or alias_kind not in PROBING_ALIAS_KINDS:
            return
        _take(
            self.lookups_by_phone_or_email,
            caller,
            "lookups_by_phone_or_email",
            "this API key looked members up by phone or e-mail more than",
        )


def _take(buckets: TokenBuckets, caller: Caller, limit: str, what: str) -> None:
    # Keyed by the key's hash, not the partner: each key of a partner has its own bucket, and
    # the bucket holds no secret.
    retry_delay_ns = buckets.take(caller.key_hash)
    if retry_delay_ns:
        rate = buckets.rate
        raise RateLimited(
            f"{what} {rate.describe()}",
            retry_delay_ns,
            limit=limit,
            limit_calls=rate.calls,
            limit_period_seconds=rate.period_seconds,
            limit_burst=rate.burst,
        )
