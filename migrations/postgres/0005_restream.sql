-- Restream destinations (postgres dialect): where a channel's owner pushes the live stream.
-- Keep in step with migrations/sqlite/0005_restream.sql. (0004 is left to RTSP pull sources.)

CREATE TABLE restream_destinations (
    id            BIGSERIAL PRIMARY KEY,
    channel_id    BIGINT  NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    -- Validated rtmp://, rtmps:// or srt:// URL without credentials or query.
    url           TEXT    NOT NULL,
    -- The owner's key at the destination. A secret the server must send, so it cannot be
    -- hashed; the API never returns it and logs never print it.
    stream_key    TEXT    NOT NULL,
    enabled       BOOLEAN NOT NULL DEFAULT TRUE,
    created_at_ms BIGINT  NOT NULL,
    updated_at_ms BIGINT  NOT NULL
);
CREATE INDEX restream_destinations_channel_idx ON restream_destinations (channel_id, id);
