-- The partners service's run-time role: it reads and appends its records and moves their state
-- (an earn posted, a hold captured, a key revoked, a sealed secret erased). No DELETE, no
-- TRUNCATE, no DDL (README, "Running on PostgreSQL"). Every key is chosen by the service: no
-- sequences to grant.
--
-- Run as the owner that ran the migrations, with search_path set to partners' schema, after
-- every `make migrate`; a migration that adds a table adds its line here. GRANT is idempotent.

-- Written once, never changed.
GRANT SELECT, INSERT ON stores, terminals, earn_rules, conversion_rules, member_aliases, member_wallets,
    conversion_quotes, tier_definitions TO partners_app;
-- Rows whose state moves. members is never updated: UPDATE is what SELECT ... FOR UPDATE needs
-- for the row lock that serialises a member's conversions.
GRANT SELECT, INSERT, UPDATE ON partners, api_keys, admin_requests, members, earns, earn_lines, redemptions,
    returns, conversions, member_tiers TO partners_app;
-- At head, the migration on start only reads which revision the schema is at.
GRANT SELECT ON alembic_version_partners TO partners_app;
