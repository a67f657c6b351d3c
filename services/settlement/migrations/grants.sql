-- The settlement service's run-time role: it records price agreements, freezes a period's
-- statements and reconciliations, and moves a period from CLOSING to CLOSED. No DELETE, no
-- TRUNCATE, no DDL, and no UPDATE of a frozen figure (README, "Running on PostgreSQL").
--
-- Run as the owner that ran the migrations, with search_path set to settlement's schema, after
-- every `make migrate`; a migration that adds a table adds its line here. GRANT is idempotent.
GRANT SELECT, INSERT ON settlement_price_agreements, settlement_statements, settlement_statement_lines,
    settlement_roll_forwards, settlement_reconciliations, settlement_reconciliation_rows,
    settlement_billing_details, settlement_statement_documents, settlement_statement_store_lines TO settlement_app;
GRANT SELECT, INSERT, UPDATE ON settlement_periods TO settlement_app;
-- A close takes the next statement numbers from its series' counter row (locked FOR UPDATE).
GRANT SELECT, INSERT, UPDATE ON settlement_statement_counters TO settlement_app;
-- Corrections: an adjustment is marked settled by the close that carries it; a row's review is
-- its current status (updated), with every change kept in the history (insert only).
GRANT SELECT, INSERT, UPDATE ON settlement_adjustments, settlement_reconciliation_reviews TO settlement_app;
GRANT SELECT, INSERT ON settlement_reconciliation_review_history TO settlement_app;
-- At head, the migration on start only reads which revision the schema is at.
GRANT SELECT ON alembic_version_settlement TO settlement_app;
