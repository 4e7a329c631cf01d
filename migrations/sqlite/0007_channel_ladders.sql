-- Per-channel transcode ladder settings (sqlite dialect): what a channel's owner changed from
-- the server's [transcode] defaults. At most one row per channel; no row: the defaults. Keep in
-- step with the other dialect's 0007.

CREATE TABLE channel_ladders (
    channel_id    INTEGER PRIMARY KEY REFERENCES channels (id) ON DELETE CASCADE,
    -- JSON object of the fields the owner set (enabled, rungs, max_rungs, codec, preset, tune),
    -- validated by the API before it is written.
    settings      TEXT    NOT NULL,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
