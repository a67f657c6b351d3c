"""What the demo coalition of `make run` is, for every service that seeds a part of it.

Services reach each other only through their proto APIs, so settlement cannot import the
partners' demo module; both take the demo partner ids from here (`services/partners/demo.py`
refuses to load if its PARTNERS name other ids).

The rule every demo seed follows: it runs only in development (`COALITION_ENV=development`,
which `make run` sets) and only on a coalition that holds no partner outside
`DEMO_PARTNER_IDS`; otherwise it skips entirely and logs `demo_seed_skipped` once.
"""

from __future__ import annotations

DEMO_PARTNER_IDS = frozenset({"fresh-mart", "fuelco", "grand-hotels", "skyair"})
# Log event of a seed that wrote nothing, with the reason.
SKIPPED_EVENT = "demo_seed_skipped"
