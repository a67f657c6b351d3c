"""Facts that rarely change, kept in process so a till's call does not look them up every time.

Two kinds, both bounded in memory (least recently used entries go first):
- facts that can change (an API key and its partner's status, earn rules, conversion rules, tier
  definitions) are
  trusted for FRESH_SECONDS after the load that found them began. A revoked or rotated key, a
  suspended partner or a new rule version is therefore seen by every partners process, including
  one that did not handle the change, at most FRESH_SECONDS after it committed (well within 1 s);
- facts that never change once written (a store's owner, a terminal, a member and its aliases:
  rows that are only ever inserted) are kept until evicted. Only what was found is kept, so a
  store, terminal or member created a moment later is seen at once;
- the holds this process placed are kept too, so a capture or void at the same till need not
  read them back: what it takes from one (owner, member, till, held amount) never changes. Its
  state can (another process may capture it, the recovery pass may record its expiry), but the
  ledger decides every capture and void against its own record under its locks, so a stale
  state here can only cost a ledger call, never change an answer (captures.py).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

FRESH_SECONDS = 0.5
API_KEYS_MAX = 10_000
PARTNERS_WITH_RULES_MAX = 10_000
CONVERSION_PAIRS_MAX = 10_000
CURRENCIES_WITH_TIERS_MAX = 10_000
STORES_MAX = 100_000
TERMINALS_MAX = 200_000
MEMBERS_MAX = 200_000
# A hold lives minutes at most; these are the ones placed last, at about 1 KiB each.
HOLDS_MAX = 20_000


class Bounded(Generic[K, V]):
    """A thread-safe least-recently-used map; entries older than `fresh_seconds` are not returned."""

    def __init__(self, size_max: int, fresh_seconds: float | None = None, clock: Callable[[], float] = time.monotonic):
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._lock = threading.Lock()
        self._size_max = size_max
        self._fresh_seconds = fresh_seconds
        self._clock = clock

    def get(self, key: K) -> V | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            loaded_at, value = entry
            if self._fresh_seconds is not None and self._clock() - loaded_at >= self._fresh_seconds:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return value

    def now(self) -> float:
        return self._clock()

    def get_or_load(self, key: K, load: Callable[[], V | None]) -> V | None:
        """The cached value, or `load()`'s (kept unless None). The entry is dated from before the
        load began, so its age bounds how stale the value can be."""
        value = self.get(key)
        if value is not None:
            return value
        started = self._clock()
        value = load()
        if value is not None:
            self.put(key, value, started)
        return value

    def put(self, key: K, value: V, loaded_at: float | None = None) -> None:
        with self._lock:
            self._entries[key] = (self._clock() if loaded_at is None else loaded_at, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self._size_max:
                self._entries.popitem(last=False)

    def forget(self, key: K) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


@dataclass(slots=True)
class Facts:
    api_keys: Bounded = field(default_factory=lambda: Bounded(API_KEYS_MAX, FRESH_SECONDS))
    earn_rules: Bounded = field(default_factory=lambda: Bounded(PARTNERS_WITH_RULES_MAX, FRESH_SECONDS))
    conversion_rules: Bounded = field(default_factory=lambda: Bounded(CONVERSION_PAIRS_MAX, FRESH_SECONDS))
    # Tier definition versions per currency ([] when it has none).
    tier_definitions: Bounded = field(default_factory=lambda: Bounded(CURRENCIES_WITH_TIERS_MAX, FRESH_SECONDS))
    store_owners: Bounded = field(default_factory=lambda: Bounded(STORES_MAX))
    terminals: Bounded = field(default_factory=lambda: Bounded(TERMINALS_MAX))
    members_by_alias: Bounded = field(default_factory=lambda: Bounded(MEMBERS_MAX))
    members_by_id: Bounded = field(default_factory=lambda: Bounded(MEMBERS_MAX))
    holds: Bounded = field(default_factory=lambda: Bounded(HOLDS_MAX))
