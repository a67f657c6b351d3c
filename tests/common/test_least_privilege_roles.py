"""Production start-up on PostgreSQL (issue 9, README "Running on PostgreSQL"): an owner runs
`make migrate`, then each service starts as its own role granted by its migrations/grants.sql
(the file operators run), and a till-to-settlement flow works end to end under those roles.
The roles cannot change the schema, delete or rewrite a record, or read another service's
tables. PostgreSQL only: roles and grants are what is tested.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy import exc as sa_exc

from coalition.partners.v1 import partners_pb2 as pb
from coalition.settlement.v1 import settlement_pb2 as spb
from services import migrate
from services.common.timeconv import timestamp_from_micros
from services.partners import model as partners_model
from services.partners import server as partners_server
from services.partners.store import partners as partner_store
from services.partners.store import recovery as recovery_store
from services.settlement.server import start as start_settlement
from tests.partners.conftest import ADMIN_KEY, Coalition, MovableClock, PartnerHandle, unique
from tests.settlement.conftest import AdminStub, settlement_settings
from tests.settlement.scripted_month import iso, tick
from tests.support.databases import PostgresSchema, require_postgres
from tests.support.roles import LoginRole, ServiceRole
from tests.support.servers import ThreadedServer, start_ledger_thread, start_partners_thread
from tests.support.tls import channel as tls_channel

SERVICES = ("ledger", "partners", "settlement")
INSUFFICIENT_PRIVILEGE = "42501"
HOUR_US = 3_600_000_000
# Sequences no role needs: ledger_clock's only row is written by the migration, id and all.
UNUSED_SEQUENCES = ("ledger_clock_id_seq",)

# What each service's own role must never do, whatever its code is made to send.
REFUSED = {
    "ledger": (
        "DROP TABLE transfers",
        "DELETE FROM transfers",
        "UPDATE entries SET posted_amount = posted_amount + 1",
        "TRUNCATE transfers",
        "ALTER TABLE transfers DISABLE TRIGGER transfers_append_only",
        "CREATE TABLE side_notes (id integer)",
        "UPDATE alembic_version_ledger SET version_num = 'none'",
    ),
    "partners": (
        "DROP TABLE earns",
        "DELETE FROM earns",
        "TRUNCATE redemptions",
        "ALTER TABLE earns ADD COLUMN bonus integer",
        "CREATE TABLE side_notes (id integer)",
    ),
    "settlement": (
        "DROP TABLE settlement_periods",
        "DELETE FROM settlement_statements",
        "UPDATE settlement_statements SET net_cents = 0",
        "CREATE TABLE side_notes (id integer)",
    ),
}


@dataclass
class Deployment:
    schemas: dict[str, PostgresSchema]
    roles: dict[str, ServiceRole]


@pytest.fixture(scope="module")
def deployment():
    """Three fresh schemas owned by an owner role (not a superuser) that migrates them with
    `make migrate` and applies each service's grants to a role of its own."""
    require_postgres()
    owner = LoginRole("coalition_owner")
    schemas: dict[str, PostgresSchema] = {}
    roles: dict[str, ServiceRole] = {}
    try:
        with pytest.MonkeyPatch.context() as patch:
            for service in SERVICES:
                schemas[service] = PostgresSchema(service)
                owner.admin(f'ALTER SCHEMA "{schemas[service].name}" OWNER TO "{owner.name}"')
                patch.setenv(f"COALITION_{service.upper()}_DATABASE_URL", owner.url_in(schemas[service].name))
            migrate.main()
        for service in SERVICES:
            schema = schemas[service].name
            roles[service] = ServiceRole(service, schema, owner.url_in(schema))
        yield Deployment(schemas, roles)
    finally:
        for schema in schemas.values():
            schema.drop()
        for role in roles.values():
            role.drop()
        owner.drop()


def test_each_role_is_granted_every_table_of_its_service_and_nothing_else(deployment):
    """A migration that adds a table without a line in grants.sql fails here, not in production."""
    owner = create_engine(deployment.schemas["ledger"].url)
    ungranted, reaching = [], []
    try:
        with owner.connect() as connection:
            for service, role in deployment.roles.items():
                relations = connection.execute(
                    text(
                        "SELECT c.relname, CASE c.relkind WHEN 'S' THEN has_sequence_privilege(:role, c.oid, 'USAGE')"
                        " ELSE has_table_privilege(:role, c.oid, 'SELECT') END AS granted"
                        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                        " WHERE n.nspname = :schema AND c.relkind IN ('r', 'p', 'S')"
                    ),
                    {"role": role.name, "schema": role.schema},
                ).all()
                assert len(relations) > 3, service
                ungranted += [relation.relname for relation in relations if not relation.granted]
                reaching += [
                    (service, other)
                    for other, other_role in deployment.roles.items()
                    if other != service
                    and connection.execute(
                        text("SELECT has_schema_privilege(:role, :schema, 'USAGE')"),
                        {"role": role.name, "schema": other_role.schema},
                    ).scalar_one()
                ]
    finally:
        owner.dispose()
    assert ungranted == list(UNUSED_SEQUENCES)
    assert reaching == []


def test_the_services_run_a_till_to_settlement_flow_as_their_own_roles(deployment):
    """Each start migrates to head as its role (nothing to do, so no DDL is attempted), then
    partners' admin and POS calls, its recovery pass's writes and a settlement close all work."""
    roles = deployment.roles
    servers = [start_ledger_thread(roles["ledger"].url)]
    try:
        ledger_address, clock = servers[0].address, MovableClock()
        servers.append(start_partners_thread(roles["partners"].url, ledger_address, ADMIN_KEY, clock))
        coalition = Coalition(servers[-1].address, clock, ledger_address)
        settings = settlement_settings(roles["settlement"].url, ledger_address)
        servers.append(ThreadedServer(lambda: start_settlement(settings)))
        app = partners_server._current
        current_user = app.database.read(lambda connection: connection.execute(text("SELECT current_user")).scalar())
        assert current_user == roles["partners"].name
        try:
            start_us = tick()
            partners = _till_flow(coalition)
            _recovery_pass_writes(app, clock)
            _settle(servers[-1].address, partners, start_us)
        finally:
            coalition.close()
    finally:
        for server in reversed(servers):
            server.stop()


def test_no_role_can_change_the_schema_delete_records_or_read_another_service(deployment):
    statements = {service: list(refused) for service, refused in REFUSED.items()}
    ledger_schema = deployment.schemas["ledger"].name
    statements["partners"].append(f'SELECT count(*) FROM "{ledger_schema}".transfers')
    statements["settlement"].append(f'SELECT count(*) FROM "{ledger_schema}".transfers')
    for service, role in deployment.roles.items():
        engine = create_engine(role.url)
        try:
            for statement in statements[service]:
                with pytest.raises(sa_exc.DBAPIError) as refused, engine.begin() as connection:
                    connection.execute(text(statement))
                assert refused.value.orig.pgcode == INSUFFICIENT_PRIVILEGE, (service, statement, refused.value)
        finally:
            engine.dispose()


@dataclass
class Partners:
    shop: PartnerHandle
    hotel: PartnerHandle
    airline: PartnerHandle
    receipt_id: str


def _till_flow(coalition: Coalition) -> Partners:
    """Admin set-up, an earn, a hold captured and one left open, a return, a conversion."""
    shop = coalition.register_partner()  # partner, store, terminal, API key, earn rule
    hotel = coalition.register_partner(pb.PARTNER_KIND_HOTEL, currency=_currency("H"), base_rate="100")
    airline = coalition.register_partner(pb.PARTNER_KIND_AIRLINE, currency=_currency("A"), base_rate="1")
    rotate = pb.RotateApiKeyRequest(partner_id=shop.partner_id, key_id=shop.key_id, request_id=unique("key"))
    rotated = coalition.call("RotateApiKey", rotate)
    shop = replace(shop, key=rotated.api_key, key_id=rotated.key_info.key_id)
    coalition.call("SuspendPartner", pb.SuspendPartnerRequest(partner_id=airline.partner_id))
    coalition.call("ReactivatePartner", pb.ReactivatePartnerRequest(partner_id=airline.partner_id))

    member_id, _ = coalition.enroll()
    earned, earn = coalition.earn(shop, member_id, [10_000, 10_000])
    assert earned.pricing.points == 100
    hold = coalition.call("AuthorizeRedemption", _hold(shop, member_id, earn.receipt_id, 30), shop.key).redemption
    capture = pb.CaptureRedemptionRequest(request_id=unique("c"), redemption_id=hold.redemption_id)
    assert coalition.call("CaptureRedemption", capture, shop.key).redemption.captured_amount == 30
    back = pb.ReturnRequest(
        request_id=unique("ret"),
        point_of_sale=shop.pos(),
        receipt_id=earn.receipt_id,
        line_numbers=[1],
        redeemed_refund_amount=10,
    )
    returned = coalition.call("Return", back, shop.key)
    assert (returned.earned_points_reversed, returned.redeemed_points_refunded) == (50, 10)
    coalition.call("AuthorizeRedemption", _hold(shop, member_id, unique("r"), 5), shop.key)  # left open
    balance = coalition.balance(member_id)
    assert (balance.posted, balance.available) == (30, 25)

    rule = pb.ConversionRule(
        from_currency_code=hotel.currency,
        to_currency_code=airline.currency,
        from_units=3,
        to_units=1,
        min_from_amount=3_000,
        step_from_amount=3_000,
        max_from_amount=300_000,
        annual_cap_from_amount=120_000,
    )
    coalition.call("CreateConversionRule", pb.CreateConversionRuleRequest(rule=rule, request_id=unique("rule")))
    coalition.earn(hotel, member_id, [100_000])
    quote_request = pb.QuoteConversionRequest(
        member=pb.MemberIdentity(member_id=member_id),
        from_currency_code=hotel.currency,
        to_currency_code=airline.currency,
        from_amount=30_000,
    )
    quote = coalition.call("QuoteConversion", quote_request, hotel.key).quote
    execute = pb.ExecuteConversionRequest(request_id=unique("x"), quote_id=quote.quote_id)
    assert coalition.call("ExecuteConversion", execute, hotel.key).conversion.state == pb.CONVERSION_STATE_COMPLETED
    assert coalition.balance(member_id, airline.currency).posted == 10_000
    return Partners(shop, hotel, airline, earn.receipt_id)


def _recovery_pass_writes(app, clock: MovableClock) -> None:
    """The recovery pass's own statements (it logs and retries its failures, so they are run
    here): erasing sealed secrets past their window, claiming a due hold and taking it back."""
    later_us = clock() + (partners_model.API_KEY_RETRY_WINDOW_SECONDS + 3_600) * 1_000_000
    app.database.write(lambda connection: partner_store.forget_sealed_secrets(connection, later_us))
    (due,) = app.database.read(lambda connection: recovery_store.due(connection, "hold", later_us, later_us, 10))
    claimed = app.database.write(lambda connection: recovery_store.claim(connection, "hold", due, later_us))
    assert claimed is not None and claimed.recovery_attempts == 1
    app.database.write(lambda connection: recovery_store.uncount(connection, "hold", claimed, later_us))


def _settle(address: str, partners: Partners, start_us: int) -> None:
    """Price agreements, then a period previewed, closed (nets posted on the ledger) and reconciled."""
    shop, hotel, airline = partners.shop, partners.hotel, partners.airline
    pts = spb.PointPrice(currency_code="PTS", issue_price_per_point="0.0100", reimbursement_price_per_point="0.0080")
    agreements = [
        (shop.partner_id, [pts], []),
        (hotel.partner_id, [pts, _free(hotel.currency)], []),
        (
            airline.partner_id,
            [_free(airline.currency)],
            [
                spb.ConversionPrice(
                    from_currency_code=hotel.currency,
                    to_currency_code=airline.currency,
                    price_per_unit_received="0.009000",
                )
            ],
        ),
    ]
    with tls_channel(address) as channel:
        settlement = AdminStub(channel)
        for partner_id, prices, conversions in agreements:
            agreement = spb.PriceAgreement(
                agreement_id=unique("agreement"),
                partner_id=partner_id,
                valid_from_time=timestamp_from_micros(start_us - HOUR_US),
                point_prices=prices,
                conversion_prices=conversions,
            )
            settlement.SetPriceAgreement(spb.SetPriceAgreementRequest(agreement=agreement))
        period = spb.PeriodSelector(
            period_id=unique("period"),
            start_time=timestamp_from_micros(start_us),
            end_time=timestamp_from_micros(tick()),
        )
        preview = settlement.PreviewStatement(spb.PreviewStatementRequest(period=period)).settlement
        # 100 issued at 0.01, 30 redeemed at 0.008, 50 earned reversed, 10 redeemed reversed.
        nets = {s.partner_id: s.net_cents for s in preview.statements}
        assert nets[shop.partner_id] == 100 - 24 - 50 + 8, nets
        closed = settlement.ClosePeriod(spb.ClosePeriodRequest(period=period))
        assert closed.closed_now and closed.settlement.state == spb.PERIOD_STATE_CLOSED
        assert {s.partner_id: s.net_cents for s in closed.settlement.statements} == nets
        file_csv = (
            "receipt_id,store_id,terminal_id,time,type,points,currency\n"
            f"{partners.receipt_id},{shop.store_id},{shop.terminal_id},"
            f"{iso(start_us + 1)},EARN,100,PTS\n"
        ).encode()
        reconcile = spb.ReconcileRequest(
            reconciliation_id=unique("rec"), partner_id=shop.partner_id, period=period, file_csv=file_csv
        )
        assert settlement.Reconcile(reconcile).created


def _hold(shop: PartnerHandle, member_id: str, receipt_id: str, amount: int) -> pb.AuthorizeRedemptionRequest:
    return pb.AuthorizeRedemptionRequest(
        request_id=unique("hold"),
        point_of_sale=shop.pos(),
        receipt_id=receipt_id,
        member=pb.MemberIdentity(member_id=member_id),
        currency_code="PTS",
        amount=amount,
        hold_timeout_seconds=600,
    )


def _free(currency: str) -> spb.PointPrice:
    return spb.PointPrice(currency_code=currency, issue_price_per_point="0", reimbursement_price_per_point="0")


def _currency(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8].upper()}"
