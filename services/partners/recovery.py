"""The server's recovery pass: it finishes what a client gave up on (earns, returns and
conversions recorded but never posted) and records what became of holds whose timeout
passed. One policy for every kind:

- a row is taken only when its clock passed: AGE_SECONDS_MIN after it was recorded (younger
  rows are left to their client's own retry), or its hold's expiry;
- every attempt is counted on the row before it is made (`recovery_attempts`), and the row's
  next attempt is put off (`next_recovery_us`) by a delay that doubles with each attempt, up
  to BACKOFF_SECONDS_MAX;
- the pass takes the least recently tried rows first, so a row that keeps failing waits
  behind the others instead of stalling them;
- when the ledger is away the pass stops (every step needs it) and the row it was on is due
  again at the next pass: an outage is not the row's fault.

Each kind's step lives with its use case and sends the same transfer ids as the client's own
retry, so the pass and a late retry race harmlessly."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from sqlalchemy import Row

from services.common.errors import Unavailable
from services.partners import conversions, earning, model, redemptions, returns
from services.partners.app import App
from services.partners.store import recovery as recovery_store

_log = structlog.get_logger("partners.recovery")

# A row younger than this is left to its client's own retry; older ones were given up on.
AGE_SECONDS_MIN = 10
# What one pass handles at most, per kind; the rest waits for the next pass.
ROWS_PER_PASS_MAX = 100
BACKOFF_SECONDS_MIN = 10
BACKOFF_SECONDS_MAX = 3_600
# A hold the ledger still reports pending (its clock decides expiry) is asked again this soon.
NOT_YET_SECONDS = 1


@dataclass(frozen=True, slots=True)
class Step:
    kind: str  # a key of services/partners/store/recovery.KINDS
    finish: Callable[[App, Row], Awaitable[str | None]]  # the row's state, or None: not yet
    age_seconds: int  # how far the row's clock must have passed


STEPS = (
    Step("earn", earning.recover_earn, AGE_SECONDS_MIN),
    Step("return", returns.recover_return, AGE_SECONDS_MIN),
    Step("conversion", conversions.recover_conversion, AGE_SECONDS_MIN),
    Step("hold", redemptions.recover_hold, 0),
)


def backoff_seconds(attempts: int) -> int:
    """The wait after the attempts-th attempt: 10 s, 20 s, 40 s, ... up to an hour."""
    return min(BACKOFF_SECONDS_MIN * 2 ** min(attempts - 1, 20), BACKOFF_SECONDS_MAX)


def _id_of(step: Step, row: Row) -> str:
    return row._mapping[recovery_store.KINDS[step.kind].id_column.name]


async def run_step(app: App, step: Step) -> int:
    """One pass over the due rows of one kind. Returns how many it finished; UNAVAILABLE
    propagates (the ledger is away: try again later)."""
    now = app.clock()
    since = now - step.age_seconds * model.MICROS_PER_SECOND
    rows = await app.read(lambda connection: recovery_store.due(connection, step.kind, since, now, ROWS_PER_PASS_MAX))
    finished = 0
    for row in rows:
        row_id = _id_of(step, row)
        attempts = row.recovery_attempts + 1
        next_us = app.clock() + backoff_seconds(attempts) * model.MICROS_PER_SECOND
        if not await app.write(
            lambda connection, row=row, next_us=next_us: recovery_store.claim(connection, step.kind, row, next_us)
        ):
            continue  # another partners process took it, or its client finished it meanwhile
        try:
            state = await step.finish(app, row)
        except Unavailable:
            await _postpone(app, step, row_id, app.clock())
            raise
        except Exception:
            # One row must not stop the others: it waits for its next attempt, behind them.
            _log.exception("recovery_attempt_failed", kind=step.kind, id=row_id, attempts=attempts)
            continue
        if state is None:
            if step.kind == "hold":
                await _postpone(app, step, row_id, app.clock() + NOT_YET_SECONDS * model.MICROS_PER_SECOND)
            _log.info("recovery_deferred", kind=step.kind, id=row_id, attempts=attempts)
            continue
        finished += 1
        _log.info("recovered", kind=step.kind, id=row_id, state=state, attempts=attempts)
    return finished


async def _postpone(app: App, step: Step, row_id: str, next_us: int) -> None:
    await app.write(lambda connection: recovery_store.postpone(connection, step.kind, row_id, next_us))


async def recover_once(app: App) -> None:
    """One bounded pass over every kind; one kind failing does not hold back the others."""
    for step in STEPS:
        try:
            count = await run_step(app, step)
        except Unavailable:
            _log.info("ledger_not_ready", task=f"recover_{step.kind}")
            return  # the ledger is away; every other step needs it too
        except Exception:  # the task must outlive one bad pass; the next pass tries again
            _log.exception("recovery_step_failed", kind=step.kind)
            continue
        if count:
            _log.info("recovery_pass", kind=step.kind, count=count)


async def recover_forever(app: App, interval_seconds: float) -> None:
    """Forever, every interval: one recovery pass."""
    while True:
        await asyncio.sleep(interval_seconds)
        await recover_once(app)
