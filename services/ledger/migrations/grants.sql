-- The ledger's run-time role: it may read and append the journal, keep its running totals and
-- clock, and drop a hold from the working set once it resolves. Nothing else: no DDL, no
-- TRUNCATE, no UPDATE or DELETE on a journal table, so neither it nor anyone holding its
-- password can switch the append-only triggers off (README, "Running on PostgreSQL").
--
-- Run as the owner that ran the migrations, with search_path set to the ledger's schema, after
-- every `make migrate`; a migration that adds a table adds its line here. GRANT is idempotent.
GRANT SELECT, INSERT ON currencies, accounts, transfers, entries, hold_resolutions, transfer_failures TO ledger_app;
GRANT SELECT, INSERT, UPDATE ON account_balances, ledger_clock TO ledger_app;
GRANT SELECT, INSERT, DELETE ON open_holds TO ledger_app;
-- Expiry: policy versions and lot draws are only added; lots and last activity move.
GRANT SELECT, INSERT ON expiry_policies, lot_draws TO ledger_app;
GRANT SELECT, INSERT, UPDATE ON lots, wallet_activity TO ledger_app;
GRANT SELECT, INSERT, UPDATE ON expiry_exemptions TO ledger_app;
-- Expiry notices are only added (one per lot and expiry date).
GRANT SELECT, INSERT ON expiry_notices TO ledger_app;
-- At head, the migration on start only reads which revision the schema is at.
GRANT SELECT ON alembic_version_ledger TO ledger_app;
