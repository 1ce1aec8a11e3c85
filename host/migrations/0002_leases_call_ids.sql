-- One live process per host id. A process takes its host's row at start
-- (only when the row is free: no row, its own, or expired) and pushes
-- `expires_ms` forward every progress interval; a crashed process's lease
-- runs out, and the next start recovers the legs it left open.
CREATE TABLE host_leases (
    host TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    renewed_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL
);

-- The SIP Call-ID of an answered leg: what a trunk's records name, for
-- matching a dispute.
ALTER TABLE cdrs ADD COLUMN sip_call_id TEXT;
