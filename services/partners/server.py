"""Partners wiring: settings, database, migrations, ledger client, gRPC server."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from coalition.partners.v1 import partners_pb2, partners_pb2_grpc
from services.common.addresses import dial_address
from services.common.auth import DEV_ADMIN_API_KEY, AdminKey, hash_api_key
from services.common.config import ConfigError, env_int, env_str, settings_or_exit, zone_of
from services.common.db import Database, DatabaseOptions, open_migrated
from services.common.errors import Unavailable
from services.common.grpc_server import ConnectionLimits, RunningServer, ServerOptions, serve_main, start_server
from services.common.interceptor import CallLimits
from services.common.ledger_client import LedgerClient
from services.common.metrics import Metrics, metrics_address_setting
from services.common.mode import is_development, secret_setting
from services.common.tls import Transport
from services.common.token_buckets import Rate
from services.common.tracing import TracingSettings, batch_tracer, tracer_provider
from services.partners import model, partners_admin, rate_limits, recovery
from services.partners.api import PartnersApi
from services.partners.app import DEFAULT_TIME_ZONE, App, Clock, system_clock
from services.partners.store import partners as partner_store

SERVICE_NAME = partners_pb2.DESCRIPTOR.services_by_name["PartnersService"].full_name
MIGRATIONS = os.path.join(os.path.dirname(__file__), "migrations")
DEV_ALIAS_HASH_KEY = "coalition-dev-alias-hash-key"
LEDGER_BOOTSTRAP_ATTEMPTS_MAX = 20
LEDGER_BOOTSTRAP_BACKOFF_SECONDS = 0.5
_log = structlog.get_logger("partners")

# Request sizes, from the limits in services/partners/model.py. A field costs its tag (1 byte),
# a length prefix (1-3 bytes) and its value; text is counted at 4 UTF-8 bytes per character.
# A basket line: line_number 11, sku and category 1 + 2 + 64 * 4 each, quantity and amount
# 1 + 10 each, its place in the list 3: 554 bytes.
BASKET_LINE_BYTES_MAX = 11 + (3 + 4 * model.SKU_LENGTH_MAX) + (3 + 4 * model.CATEGORY_LENGTH_MAX) + 2 * 11 + 3
# An earn: 200 lines * 554 + 8 KiB for ids, point of sale and member alias (254 characters) = 118,992.
EARN_REQUEST_BYTES_MAX = model.BASKET_LINES_MAX * BASKET_LINE_BYTES_MAX + 8 * 1024
# An offline batch: 500 earns * (118,992 + 32 for occur_time and framing) = 59,512,000.
UPLOAD_OFFLINE_BATCH_REQUEST_BYTES_MAX = model.OFFLINE_BATCH_MAX * (EARN_REQUEST_BYTES_MAX + 32)
# Every other request is smaller than an earn; the largest, an earn rule, has 2 * 100 categories
# of 64 characters with their multipliers: about 60 KB.
REQUEST_BYTES_MAX_DEFAULT = EARN_REQUEST_BYTES_MAX
REQUEST_BYTES_MAX_BY_METHOD = {"UploadOfflineBatch": UPLOAD_OFFLINE_BATCH_REQUEST_BYTES_MAX}

# The App of the server started last in this process, for seed_demo().
_current: App | None = None


@dataclass(frozen=True, slots=True)
class PartnersSettings:
    database_url: str
    listen_address: str
    ledger_address: str
    ledger_deadline_ms: int
    admin_api_key: str
    alias_hash_key: str
    db_pool_size: int
    db_statement_timeout_ms: int
    grpc_grace_period_seconds: int
    grpc_concurrent_rpcs_max: int
    transport: Transport
    pending_earn_recovery_interval_seconds: float = 30
    grpc_connection_limits: ConnectionLimits = field(default_factory=ConnectionLimits)
    # Per partner API key and process (services/partners/rate_limits.py). No "off" value: a
    # deployment that limits elsewhere sets them high.
    rate_limit_calls_per_second: int = rate_limits.CALLS_PER_SECOND_DEFAULT
    rate_limit_burst_calls: int = rate_limits.CALLS_BURST_DEFAULT
    lookup_rate_limit_calls_per_minute: int = rate_limits.LOOKUPS_BY_PHONE_OR_EMAIL_PER_MINUTE_DEFAULT
    lookup_rate_limit_burst_calls: int = rate_limits.LOOKUPS_BY_PHONE_OR_EMAIL_BURST_DEFAULT
    # The coalition's time zone (the ledger's too): the calendar months and years of tier windows.
    time_zone: str = DEFAULT_TIME_ZONE
    # host:port of the Prometheus endpoint; "" is off (from the environment: 127.0.0.1:9152 unless "off").
    metrics_address: str = ""
    tracing: TracingSettings = field(default_factory=TracingSettings)

    @classmethod
    def from_env(cls) -> PartnersSettings:
        settings = cls(
            database_url=env_str("COALITION_PARTNERS_DATABASE_URL", "sqlite:///var/partners.db"),
            listen_address=env_str("COALITION_PARTNERS_LISTEN_ADDRESS", "127.0.0.1:50052"),
            ledger_address=dial_address("ledger"),
            ledger_deadline_ms=env_int("COALITION_PARTNERS_LEDGER_DEADLINE_MS", 3_000, minimum=50, maximum=60_000),
            # Published development values; production refuses to start without its own.
            admin_api_key=secret_setting("COALITION_ADMIN_API_KEY", DEV_ADMIN_API_KEY),
            alias_hash_key=secret_setting("COALITION_PARTNERS_ALIAS_HASH_KEY", DEV_ALIAS_HASH_KEY),
            db_pool_size=env_int("COALITION_PARTNERS_DB_POOL_SIZE", 8, minimum=2, maximum=64),
            db_statement_timeout_ms=env_int("COALITION_DB_STATEMENT_TIMEOUT_MS", 15_000, minimum=100),
            grpc_grace_period_seconds=env_int("COALITION_GRPC_GRACE_PERIOD_SECONDS", 10, minimum=0),
            grpc_concurrent_rpcs_max=env_int("COALITION_GRPC_CONCURRENT_RPCS_MAX", 1024, minimum=1),
            transport=Transport.from_env("partners", "COALITION_PARTNERS"),
            pending_earn_recovery_interval_seconds=env_int(
                "COALITION_PARTNERS_PENDING_EARN_RECOVERY_INTERVAL_SECONDS", 30, minimum=1, maximum=3_600
            ),
            grpc_connection_limits=ConnectionLimits.from_env("COALITION"),
            rate_limit_calls_per_second=env_int(
                "COALITION_PARTNERS_RATE_LIMIT_PER_SECOND", rate_limits.CALLS_PER_SECOND_DEFAULT, minimum=1
            ),
            rate_limit_burst_calls=env_int(
                "COALITION_PARTNERS_RATE_LIMIT_BURST", rate_limits.CALLS_BURST_DEFAULT, minimum=1
            ),
            lookup_rate_limit_calls_per_minute=env_int(
                "COALITION_PARTNERS_LOOKUP_RATE_LIMIT_PER_MINUTE",
                rate_limits.LOOKUPS_BY_PHONE_OR_EMAIL_PER_MINUTE_DEFAULT,
                minimum=1,
            ),
            lookup_rate_limit_burst_calls=env_int(
                "COALITION_PARTNERS_LOOKUP_RATE_LIMIT_BURST",
                rate_limits.LOOKUPS_BY_PHONE_OR_EMAIL_BURST_DEFAULT,
                minimum=1,
            ),
            time_zone=env_str("COALITION_TIME_ZONE", DEFAULT_TIME_ZONE),
            metrics_address=metrics_address_setting("partners"),
            tracing=TracingSettings.from_env(),
        )
        zone_of(settings.time_zone)  # refuse an unknown zone at start
        return settings


def open_database(settings: PartnersSettings) -> Database:
    options = DatabaseOptions(
        url=settings.database_url,
        pool_size=settings.db_pool_size,
        statement_timeout_ms=settings.db_statement_timeout_ms,
    )
    return open_migrated(options, MIGRATIONS, "alembic_version_partners")


def _refuse_published_keys(database: Database) -> None:
    """Production never answers to the demo's published API keys, whoever seeded them."""
    from services.partners.demo import DEMO_KEYS

    def active(connection) -> list[str]:
        return [p for p, key in DEMO_KEYS.items() if partner_store.partner_of_key(connection, hash_api_key(key))]

    found = database.read(active)
    if found:
        database.dispose()
        raise ConfigError(
            f"the published demo API keys of {', '.join(sorted(found))} are active in this database: revoke them "
            "(RevokeApiKey, in development) before starting in production"
        )


async def _bootstrap_ledger(app: App) -> None:
    """The ledger may still be starting (make run starts both): retry a bounded number of times."""
    for attempt in range(1, LEDGER_BOOTSTRAP_ATTEMPTS_MAX + 1):
        try:
            await partners_admin.bootstrap_ledger(app)
            return
        except Unavailable:
            if attempt == LEDGER_BOOTSTRAP_ATTEMPTS_MAX:
                raise
            _log.info("ledger_not_ready", attempt=attempt)
            await asyncio.sleep(LEDGER_BOOTSTRAP_BACKOFF_SECONDS)


def _rate_limits(settings: PartnersSettings, clock: Callable[[], int]) -> rate_limits.RateLimits:
    return rate_limits.RateLimits(
        calls=Rate(settings.rate_limit_calls_per_second, 1, settings.rate_limit_burst_calls),
        lookups_by_phone_or_email=Rate(
            settings.lookup_rate_limit_calls_per_minute, 60, settings.lookup_rate_limit_burst_calls
        ),
        clock=clock,
    )


async def start(
    settings: PartnersSettings | None = None,
    clock: Clock = system_clock,
    rate_limit_clock: Callable[[], int] = time.monotonic_ns,
    span_processor=None,
) -> RunningServer:
    """Start serving. The clocks are injectable so tests can move time: `clock` (microseconds,
    UTC) for the domain, `rate_limit_clock` (monotonic nanoseconds) for the rate limits;
    `span_processor` (tests) receives the spans, tracing on whatever the settings say."""
    global _current
    settings = settings or PartnersSettings.from_env()
    admin_key = AdminKey(settings.admin_api_key)
    if admin_key.is_dev_default:
        _log.warning("admin_key_is_dev_default", hint="set COALITION_ADMIN_API_KEY outside development")
    metrics = Metrics("partners") if settings.metrics_address else None
    tracing = tracer_provider(settings.tracing, "partners", span_processor)
    database = await asyncio.to_thread(open_database, settings)
    if metrics is not None:
        metrics.watch_database(database)
    if not is_development():
        await asyncio.to_thread(_refuse_published_keys, database)
    ledger = LedgerClient(
        settings.ledger_address,
        settings.transport,
        settings.ledger_deadline_ms / 1000,
        merge_transfers=True,
        tracer_provider=tracing,
    )
    app = App(
        database,
        ledger,
        admin_key,
        settings.alias_hash_key.encode(),
        clock,
        time_zone=zone_of(settings.time_zone),
        rate_limits=_rate_limits(settings, rate_limit_clock),
        metrics=metrics,
        tracer=batch_tracer(tracing),
    )
    await _bootstrap_ledger(app)

    def register(server):
        partners_pb2_grpc.add_PartnersServiceServicer_to_server(PartnersApi(app), server)
        return [SERVICE_NAME]

    background: list[asyncio.Task] = []

    async def on_stopped() -> None:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await app.posted_earns.close()
        await ledger.close()
        database.dispose()
        if tracing is not None:
            await asyncio.to_thread(tracing.shutdown)

    options = ServerOptions(
        listen_address=settings.listen_address,
        grace_period_seconds=settings.grpc_grace_period_seconds,
        call_limits=CallLimits(
            unary_calls_max=settings.grpc_concurrent_rpcs_max,
            request_bytes_max_default=REQUEST_BYTES_MAX_DEFAULT,
            request_bytes_max_by_method=REQUEST_BYTES_MAX_BY_METHOD,
        ),
        connection_limits=settings.grpc_connection_limits,
        transport=settings.transport,
        health_engines=(database.writer, database.reader),
        metrics=metrics,
        metrics_address=settings.metrics_address,
        tracer_provider=tracing,
    )
    running = await start_server(options, register, on_stopped)
    background.append(
        asyncio.create_task(
            recovery.recover_forever(app, settings.pending_earn_recovery_interval_seconds), name="pending-recovery"
        )
    )
    _current = app
    return running


async def seed_demo() -> None:
    """Idempotently seed the demo coalition into the server started by start()."""
    from services.partners.demo import seed

    if _current is None:
        raise RuntimeError("start() the partners server before seeding")
    await seed(_current)


def main() -> None:
    settings = settings_or_exit(PartnersSettings.from_env)
    serve_main(lambda: start(settings), io_threads=settings.db_pool_size)


if __name__ == "__main__":
    main()
