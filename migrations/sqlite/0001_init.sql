-- tidecast initial schema, SQLite dialect (the embedded default backend).
-- Keep in step with migrations/postgres/0001_init.sql: same tables, columns and constraints.
-- Timestamps are unix milliseconds. SQLite INTEGER is 64-bit, so it maps to Rust i64.

CREATE TABLE users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    -- Stored lowercased by the store, so the plain UNIQUE makes it case-insensitive.
    email         TEXT    NOT NULL UNIQUE,
    username      TEXT    NOT NULL UNIQUE,
    -- Argon2id PHC string; NULL for accounts that cannot log in with a password.
    password_hash TEXT,
    is_admin      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at_ms INTEGER NOT NULL
);

CREATE TABLE channels (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    name            TEXT    NOT NULL UNIQUE,
    title           TEXT    NOT NULL DEFAULT '',
    owner_id        INTEGER REFERENCES users (id) ON DELETE SET NULL,
    visibility      TEXT    NOT NULL DEFAULT 'public'
                    CHECK (visibility IN ('public', 'subscribers', 'private')),
    -- SHA-256 of the stream key; the key itself is never stored.
    stream_key_hash BLOB    NOT NULL UNIQUE CHECK (length(stream_key_hash) = 32),
    created_at_ms   INTEGER NOT NULL,
    updated_at_ms   INTEGER NOT NULL
);

CREATE INDEX channels_owner_id_idx ON channels (owner_id);
