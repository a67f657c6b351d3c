"""The server's recovery pass: it finishes what a client gave up on (earns, returns and
conversions recorded but never posted) and records what became of holds whose timeout
passed, and it erases API-key secrets whose retry window ended. One policy for every kind:

- a row is taken only when its clock passed: AGE_SECONDS_MIN after it was recorded (younger
  rows are left to their client's own retry), or its hold's expiry;
- every attempt is counted on the row before it is made (`recovery_attempts`), and the row's
  next attempt is put off (`next_recovery_us`) by a delay that doubles with each attempt, up
  to BACKOFF_SECONDS_MAX;
- the pass takes the earliest due rows first (rows never tried before any other), so a row
  that keeps failing waits behind the others instead of stalling them;
- an attempt that could not tell is not counted: when the ledger is away (the pass stops
  there, as every step needs it) or answers "not yet" (a hold it still reports pending, a
  return whose member's balance kept moving), the row is due again NOT_YET_SECONDS later,
  behind the rows already due, with its count and backoff as they were.

Each kind's step lives with its use case and sends the same transfer ids as the client's own
retry, so the pass and a late retry race harmlessly."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from sqlalchemy import Row

from services.common.errors import Unavailable
from services.partners import captures, conversions, earn_posting, model, returns
from services.partners.app import App
from services.partners.store import partners as partner_store
from services.partners.store import recovery as recovery_store

_log = structlog.get_logger("partners.recovery")

# A row younger than this is left to its client's own retry; older ones were given up on.
AGE_SECONDS_MIN = 10
# What one pass handles at most, per kind; the rest waits for the next pass.
ROWS_PER_PASS_MAX = 100
BACKOFF_SECONDS_MIN = 10
BACKOFF_SECONDS_MAX = 3_600
# An attempt that could not tell (ledger away, or "not yet") is made again this soon, uncounted.
NOT_YET_SECONDS = 1


@dataclass(frozen=True, slots=True)
class Step:
    kind: str  # a key of services/partners/store/recovery.KINDS
    finish: Callable[[App, Row], Awaitable[str | None]]  # the row's state, or None: not yet
    age_seconds: int  # how far the row's clock must have passed


STEPS = (
    Step("earn", earn_posting.recover_earn, AGE_SECONDS_MIN),
    Step("return", returns.recover_return, AGE_SECONDS_MIN),
    Step("conversion", conversions.recover_conversion, AGE_SECONDS_MIN),
    Step("hold", captures.recover_hold, 0),
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
        claimed = await app.write(
            lambda connection, row=row, next_us=next_us: recovery_store.claim(connection, step.kind, row, next_us)
        )
        if claimed is None:
            continue  # another partners process took it, or its client finished it meanwhile
        try:
            state = await step.finish(app, claimed)
        except Unavailable:
            await _uncount(app, step, claimed)
            raise
        except Exception:
            # One row must not stop the others: it waits for its next attempt, behind them.
            _log.exception("recovery_attempt_failed", kind=step.kind, id=row_id, attempts=attempts)
            continue
        if state is None:
            await _uncount(app, step, claimed)
            _log.info("recovery_deferred", kind=step.kind, id=row_id)
            continue
        finished += 1
        _log.info("recovered", kind=step.kind, id=row_id, state=state, attempts=attempts)
    return finished


async def _uncount(app: App, step: Step, claimed: Row) -> None:
    next_us = app.clock() + NOT_YET_SECONDS * model.MICROS_PER_SECOND
    await app.write(lambda connection: recovery_store.uncount(connection, step.kind, claimed, next_us))


async def forget_expired_secrets(app: App) -> None:
    """An issued key's sealed secret is kept for its retry window only; past it, it is erased
    (within one pass), whether or not another key was issued since."""
    window_start = app.clock() - model.API_KEY_RETRY_WINDOW_SECONDS * model.MICROS_PER_SECOND
    await app.write(lambda connection: partner_store.forget_sealed_secrets(connection, window_start))


async def recover_once(app: App) -> None:
    """One bounded pass over every kind; one kind failing does not hold back the others."""
    try:
        await forget_expired_secrets(app)
    except Exception:  # the database is away; the next pass tries again
        _log.exception("recovery_step_failed", kind="sealed_secrets")
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


async def record_backlog(app: App) -> None:
    """With metrics: each kind's rows left to the pass (coalition_partners_recovery_backlog)."""
    now = app.clock()
    since = {step.kind: now - step.age_seconds * model.MICROS_PER_SECOND for step in STEPS}

    def count(connection) -> dict[str, int]:
        return {kind: recovery_store.backlog(connection, kind, before) for kind, before in since.items()}

    try:
        counts = await app.read(count)
    except Exception as error:  # the database is away; the next pass counts again
        _log.warning("recovery_backlog_unread", error=repr(error))
        return
    for kind, rows in counts.items():
        app.metrics.recovery_backlog.labels(kind).set(rows)


async def recover_forever(app: App, interval_seconds: float) -> None:
    """Forever, every interval: one recovery pass (then, with metrics, its backlog counted)."""
    while True:
        await asyncio.sleep(interval_seconds)
        await recover_once(app)
        if app.metrics is not None:
            await record_backlog(app)
