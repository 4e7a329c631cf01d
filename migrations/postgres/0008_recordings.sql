-- Live-to-VOD recordings (postgres dialect): one row per recorded live session, beside its row in
-- `videos` (source 'live'). The video's status is 'live' while recording, then 'ready' or
-- 'failed'; this row says where the media is and how the recording went. Keep in step with the
-- other dialect's 0008.

CREATE TABLE recordings (
    video_id       BIGINT  PRIMARY KEY REFERENCES videos (id) ON DELETE CASCADE,
    channel_id     BIGINT  REFERENCES channels (id) ON DELETE SET NULL,
    state          TEXT    NOT NULL CHECK (state IN ('recording', 'ready', 'failed')),
    -- Where the media is: 'local' (under the archive directory) or 's3'.
    backend        TEXT    NOT NULL DEFAULT 'local',
    -- The recording's directory under the archive root (or key prefix in a bucket).
    location       TEXT    NOT NULL,
    started_at_ms  BIGINT  NOT NULL,
    ended_at_ms    BIGINT,
    size_bytes     BIGINT  NOT NULL DEFAULT 0,
    -- Stretches the archive could not record (storage errors, falling behind the live window).
    gaps           BIGINT  NOT NULL DEFAULT 0,
    failure_reason TEXT,
    updated_at_ms  BIGINT  NOT NULL
);
CREATE INDEX recordings_state_idx ON recordings (state);
CREATE INDEX recordings_channel_idx ON recordings (channel_id, started_at_ms);

-- A channel owner's recording settings (absent: the server's [archive] defaults): whether its
-- live sessions are recorded, and how long recordings are kept (NULL: the default; 0: forever).
CREATE TABLE channel_recording (
    channel_id    BIGINT PRIMARY KEY REFERENCES channels (id) ON DELETE CASCADE,
    record        BOOLEAN NOT NULL,
    keep_days     BIGINT,
    keep_bytes    BIGINT,
    updated_at_ms BIGINT NOT NULL
);
