-- Restream destinations (sqlite dialect): where a channel's owner pushes the live stream.
-- Keep in step with migrations/postgres/0005_restream.sql. (0004 is left to RTSP pull sources.)

CREATE TABLE restream_destinations (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    channel_id    INTEGER NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    -- Validated rtmp://, rtmps:// or srt:// URL without credentials or query.
    url           TEXT    NOT NULL,
    -- The owner's key at the destination. A secret the server must send, so it cannot be
    -- hashed; the API never returns it and logs never print it.
    stream_key    TEXT    NOT NULL,
    enabled       INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
CREATE INDEX restream_destinations_channel_idx ON restream_destinations (channel_id, id);
