-- Revoked access tokens (logout), SQLite dialect: the durable record behind the in-memory and
-- Redis copies, so a logout survives a restart of the server or of Redis. A row is needed only
-- until the token would have expired anyway; expired rows are purged by the server.
-- Keep in step with migrations/postgres/0003_revoked_tokens.sql.

CREATE TABLE revoked_tokens (
    jti           TEXT    PRIMARY KEY,
    -- When the token expires (its `exp`), unix milliseconds.
    expires_at_ms INTEGER NOT NULL,
    revoked_at_ms INTEGER NOT NULL
);
-- Nodes load revocations made since their last look, and the purge deletes by expiry.
CREATE INDEX revoked_tokens_revoked_idx ON revoked_tokens (revoked_at_ms);
CREATE INDEX revoked_tokens_expires_idx ON revoked_tokens (expires_at_ms);
