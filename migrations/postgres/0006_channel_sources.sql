-- RTSP pull sources (postgres dialect): the camera a channel pulls instead of waiting for a
-- publisher. At most one per channel. Keep in step with the other dialect's 0006.

CREATE TABLE channel_sources (
    channel_id    BIGINT PRIMARY KEY REFERENCES channels (id) ON DELETE CASCADE,
    -- Validated rtsp:// URL without credentials.
    url           TEXT    NOT NULL,
    -- The camera's credentials (Basic or Digest). Secrets the server must send, so they cannot
    -- be hashed; the API never returns the password and logs never print either.
    username      TEXT    NOT NULL DEFAULT '',
    password      TEXT    NOT NULL DEFAULT '',
    -- 'tcp' (interleaved) or 'udp'.
    transport     TEXT    NOT NULL DEFAULT 'tcp' CHECK (transport IN ('tcp', 'udp')),
    -- Pull only while someone watches.
    on_demand     BOOLEAN NOT NULL DEFAULT FALSE,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
