-- tidecast initial schema, PostgreSQL dialect.
-- Keep in step with migrations/sqlite/0001_init.sql: same tables, columns and constraints.
-- Every integer is BIGINT so it decodes as Rust i64 on both backends. Timestamps are unix ms.

CREATE TABLE users (
    id            BIGSERIAL PRIMARY KEY,
    -- Stored lowercased by the store, so the plain UNIQUE makes it case-insensitive.
    email         TEXT    NOT NULL UNIQUE,
    username      TEXT    NOT NULL UNIQUE,
    -- Argon2id PHC string; NULL for accounts that cannot log in with a password.
    password_hash TEXT,
    is_admin      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at_ms BIGINT  NOT NULL
);

CREATE TABLE channels (
    id              BIGSERIAL PRIMARY KEY,
    name            TEXT    NOT NULL UNIQUE,
    title           TEXT    NOT NULL DEFAULT '',
    owner_id        BIGINT  REFERENCES users (id) ON DELETE SET NULL,
    visibility      TEXT    NOT NULL DEFAULT 'public'
                    CHECK (visibility IN ('public', 'subscribers', 'private')),
    -- SHA-256 of the stream key; the key itself is never stored.
    stream_key_hash BYTEA   NOT NULL UNIQUE CHECK (octet_length(stream_key_hash) = 32),
    created_at_ms   BIGINT  NOT NULL,
    updated_at_ms   BIGINT  NOT NULL
);

CREATE INDEX channels_owner_id_idx ON channels (owner_id);
