"""Settlement wiring: settings from the environment, database and migrations, ledger client, gRPC server."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog

from coalition.settlement.v1 import settlement_pb2, settlement_pb2_grpc
from services.common.addresses import dial_address
from services.common.auth import DEV_ADMIN_API_KEY, AdminKey
from services.common.config import ConfigError, env_int, env_str, settings_or_exit
from services.common.db import Database, DatabaseOptions, open_migrated
from services.common.grpc_server import ConnectionLimits, RunningServer, ServerOptions, serve_main, start_server
from services.common.interceptor import CallLimits
from services.common.metrics import Metrics, metrics_address_setting
from services.common.mode import is_development, secret_setting
from services.common.tls import Transport
from services.common.tracing import TracingSettings, tracer_provider
from services.settlement.api import SettlementApi
from services.settlement.context import SettlementContext
from services.settlement.documents import BillingDetails, validate_billing_details
from services.settlement.ledger_client import LedgerClient
from services.settlement.model import SettlementRuleError
from services.settlement.reconciliation import FILE_BYTES_MAX

SERVICE_NAME = settlement_pb2.DESCRIPTOR.services_by_name["SettlementService"].full_name
MIGRATIONS = os.path.join(os.path.dirname(__file__), "migrations")
VERSION_TABLE = "alembic_version_settlement"
_log = structlog.get_logger("settlement")
# Request sizes: a Reconcile carries the partner's file (at most FILE_BYTES_MAX, 10 MiB) plus its
# ids, partner id (128 characters at 4 UTF-8 bytes) and period: 10 MiB + 4 KiB. Every other request
# is a few ids and times, far below 64 KiB.
RECONCILE_REQUEST_BYTES_MAX = FILE_BYTES_MAX + 4 * 1024
REQUEST_BYTES_MAX_DEFAULT = 64 * 1024
# The context of the server started last in this process, for seed_demo().
_started: list[SettlementContext] = []


@dataclass(frozen=True, slots=True)
class SettlementSettings:
    database_url: str
    listen_address: str
    ledger_address: str
    time_zone: str
    admin_api_key: str
    close_delay_seconds: int
    audit_lag_seconds: int
    db_pool_size: int
    db_statement_timeout_ms: int
    grpc_grace_period_seconds: int
    grpc_concurrent_rpcs_max: int
    transport: Transport
    grpc_connection_limits: ConnectionLimits = field(default_factory=ConnectionLimits)
    # The operator's own billing details printed on statement documents; None when not configured.
    operator_billing: BillingDetails | None = None
    # host:port of the Prometheus endpoint; "" is off (from the environment: 127.0.0.1:9153 unless "off").
    metrics_address: str = ""
    tracing: TracingSettings = field(default_factory=TracingSettings)

    @classmethod
    def from_env(cls) -> SettlementSettings:
        settings = cls(
            database_url=env_str("COALITION_SETTLEMENT_DATABASE_URL", "sqlite:///var/settlement.db"),
            listen_address=env_str("COALITION_SETTLEMENT_LISTEN_ADDRESS", "127.0.0.1:50053"),
            ledger_address=dial_address("ledger"),
            time_zone=env_str("COALITION_TIME_ZONE", "Europe/Amsterdam"),
            admin_api_key=secret_setting("COALITION_ADMIN_API_KEY", DEV_ADMIN_API_KEY),
            close_delay_seconds=env_int("COALITION_SETTLEMENT_CLOSE_DELAY_SECONDS", 60, minimum=0, maximum=86_400),
            audit_lag_seconds=env_int("COALITION_SETTLEMENT_AUDIT_LAG_SECONDS", 2, minimum=0, maximum=3_600),
            db_pool_size=env_int("COALITION_SETTLEMENT_DB_POOL_SIZE", 4, minimum=1, maximum=64),
            db_statement_timeout_ms=env_int("COALITION_DB_STATEMENT_TIMEOUT_MS", 15_000, minimum=100),
            grpc_grace_period_seconds=env_int("COALITION_GRPC_GRACE_PERIOD_SECONDS", 10, minimum=0),
            grpc_concurrent_rpcs_max=env_int("COALITION_GRPC_CONCURRENT_RPCS_MAX", 64, minimum=1),
            transport=Transport.from_env("settlement", "COALITION_SETTLEMENT"),
            grpc_connection_limits=ConnectionLimits.from_env("COALITION"),
            operator_billing=operator_billing_from_env(),
            metrics_address=metrics_address_setting("settlement"),
            tracing=TracingSettings.from_env(),
        )
        settings.zone()
        return settings

    def zone(self) -> ZoneInfo:
        try:
            return ZoneInfo(self.time_zone)
        except (ZoneInfoNotFoundError, ValueError) as error:
            raise ConfigError(f"COALITION_TIME_ZONE {self.time_zone!r} is not a known time zone") from error


OPERATOR_BILLING_SETTINGS = (
    ("legal_name", "COALITION_OPERATOR_LEGAL_NAME"),
    ("address", "COALITION_OPERATOR_ADDRESS"),
    ("vat_id", "COALITION_OPERATOR_VAT_ID"),
    ("iban", "COALITION_OPERATOR_IBAN"),
    ("billing_email", "COALITION_OPERATOR_BILLING_EMAIL"),
)


# Development only (COALITION_ENV=development) and only when no COALITION_OPERATOR_* is set.
DEMO_OPERATOR_BILLING = BillingDetails(
    "Coalition Exchange Demo B.V.", "Herengracht 500\n1017 CB Amsterdam", "NL000000000B01", "NL30DEMO0000000009"
)


def operator_billing_from_env() -> BillingDetails | None:
    """All unset: None (documents say the operator's details are not configured; development: the
    demo operator's). Otherwise legal
    name, address, VAT id and IBAN are required and checked like a partner's; in the address the
    two characters \\n start a new line."""
    values = {name: env_str(variable, "") for name, variable in OPERATOR_BILLING_SETTINGS}
    if not any(values.values()):
        return DEMO_OPERATOR_BILLING if is_development() else None
    values["address"] = values["address"].replace("\\n", "\n")
    try:
        return validate_billing_details(BillingDetails(**values), email_required=False)
    except SettlementRuleError as error:
        raise ConfigError(f"COALITION_OPERATOR_* billing details: {error.message}") from error


def open_database(settings: SettlementSettings) -> Database:
    options = DatabaseOptions(
        url=settings.database_url,
        pool_size=settings.db_pool_size,
        statement_timeout_ms=settings.db_statement_timeout_ms,
    )
    return open_migrated(options, MIGRATIONS, VERSION_TABLE)


async def start(settings: SettlementSettings | None = None, *, span_processor=None) -> RunningServer:
    """Start serving; `span_processor` (tests) receives the spans, tracing on whatever the settings say."""
    settings = settings or SettlementSettings.from_env()
    metrics = Metrics("settlement") if settings.metrics_address else None
    tracing = tracer_provider(settings.tracing, "settlement", span_processor)
    admin_key = AdminKey(settings.admin_api_key)
    if admin_key.is_dev_default:
        _log.warning("admin_key_is_dev_default", hint="set COALITION_ADMIN_API_KEY outside development")
    database = await asyncio.to_thread(open_database, settings)
    if metrics is not None:
        metrics.watch_database(database)
    ledger = LedgerClient(settings.ledger_address, settings.transport, tracer_provider=tracing)
    context = SettlementContext(
        database=database,
        ledger=ledger,
        time_zone=settings.zone(),
        close_delay_seconds=settings.close_delay_seconds,
        audit_lag_seconds=settings.audit_lag_seconds,
        operator_billing=settings.operator_billing,
        metrics=metrics,
    )

    _started.append(context)

    def register(server):
        settlement_pb2_grpc.add_SettlementServiceServicer_to_server(SettlementApi(context, admin_key), server)
        return [SERVICE_NAME]

    async def on_stopped() -> None:
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
            request_bytes_max_by_method={"Reconcile": RECONCILE_REQUEST_BYTES_MAX},
        ),
        connection_limits=settings.grpc_connection_limits,
        transport=settings.transport,
        health_engines=(database.writer, database.reader),
        metrics=metrics,
        metrics_address=settings.metrics_address,
        tracer_provider=tracing,
    )
    return await start_server(options, register, on_stopped)


async def seed_demo() -> None:
    """Idempotently record demo price agreements for the partners the demo put on the ledger."""
    from services.settlement.demo import seed

    if _started:
        await seed(_started[-1])


def main() -> None:
    settings = settings_or_exit(SettlementSettings.from_env)
    serve_main(lambda: start(settings), io_threads=settings.db_pool_size)


if __name__ == "__main__":
    main()
