-- Billing schema. Portable between SQLite and PostgreSQL: TEXT and BIGINT
-- only (money in micros, times in Unix milliseconds, flags 0/1), keys
-- chosen by the host, no serial columns.

-- Prepaid accounts, one per chat address. `reserved` is the sum of the
-- live sessions' reservations; `balance - reserved` is what can still be
-- reserved, and a conditional UPDATE keeps it from going below zero.
CREATE TABLE accounts (
    id TEXT PRIMARY KEY,
    currency TEXT NOT NULL,
    balance BIGINT NOT NULL,
    reserved BIGINT NOT NULL DEFAULT 0,
    live_paid_legs BIGINT NOT NULL DEFAULT 0,
    max_paid_legs BIGINT,
    daily_spend_cap BIGINT,
    blocked BIGINT NOT NULL DEFAULT 0,
    created_ms BIGINT NOT NULL
);

-- SIP providers, kept in step with the configuration's [[sip.providers]].
CREATE TABLE providers (
    name TEXT PRIMARY KEY,
    target TEXT NOT NULL,
    username TEXT,
    password TEXT,
    enabled BIGINT NOT NULL DEFAULT 1
);

-- Price per minute of a destination prefix through a provider.
CREATE TABLE rates (
    provider TEXT NOT NULL REFERENCES providers (name),
    prefix TEXT NOT NULL,
    price_per_minute BIGINT NOT NULL,
    increment_secs BIGINT NOT NULL DEFAULT 1,
    connect_fee BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (provider, prefix)
);

-- Credit set aside for one live session: `amount` granted in all, `used`
-- by its settled legs. What is left is released when the session ends.
CREATE TABLE reservations (
    session_id TEXT PRIMARY KEY,
    account TEXT NOT NULL REFERENCES accounts (id),
    amount BIGINT NOT NULL,
    used BIGINT NOT NULL DEFAULT 0,
    host TEXT NOT NULL
);

-- One call detail record per leg. Written when the leg is dialled, marked
-- answered, its progress refreshed while it is up, and settled once.
CREATE TABLE cdrs (
    leg_id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    account TEXT NOT NULL,
    role TEXT NOT NULL,
    address TEXT NOT NULL,
    provider TEXT,
    price_per_minute BIGINT NOT NULL,
    increment_secs BIGINT NOT NULL,
    connect_fee BIGINT NOT NULL,
    host TEXT NOT NULL,
    started_ms BIGINT NOT NULL,
    answered_ms BIGINT,
    progress_ms BIGINT,
    ended_ms BIGINT,
    billed_secs BIGINT,
    cost BIGINT,
    sip_status BIGINT,
    end_reason TEXT,
    settled BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX cdrs_by_account ON cdrs (account, started_ms);
CREATE INDEX cdrs_open_by_host ON cdrs (host, settled);

-- What each account spent per UTC day, for the daily cap.
CREATE TABLE daily_spend (
    account TEXT NOT NULL,
    day BIGINT NOT NULL,
    amount BIGINT NOT NULL,
    PRIMARY KEY (account, day)
);

-- Every attempt through a provider, for the routing statistics.
CREATE TABLE provider_attempts (
    attempt_id TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    answered BIGINT NOT NULL,
    talk_secs BIGINT NOT NULL,
    pdd_ms BIGINT,
    sip_status BIGINT,
    host TEXT NOT NULL
);
CREATE INDEX provider_attempts_by_time ON provider_attempts (at_ms);
