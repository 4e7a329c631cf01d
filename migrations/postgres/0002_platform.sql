-- Platform API schema, PostgreSQL dialect: videos, subscriptions, billing events, watch history,
-- comments, and full-text search. Keep in step with migrations/sqlite/0002_platform.sql.

CREATE TABLE videos (
    id            BIGSERIAL PRIMARY KEY,
    channel_id    BIGINT  REFERENCES channels (id) ON DELETE CASCADE,
    owner_id      BIGINT  REFERENCES users (id) ON DELETE SET NULL,
    title         TEXT    NOT NULL,
    description   TEXT    NOT NULL DEFAULT '',
    -- Space-separated lowercase tags (no spaces inside a tag).
    tags          TEXT    NOT NULL DEFAULT '',
    visibility    TEXT    NOT NULL DEFAULT 'public'
                  CHECK (visibility IN ('public', 'subscribers', 'private')),
    source        TEXT    NOT NULL CHECK (source IN ('upload', 'live')),
    duration_ms   BIGINT  NOT NULL DEFAULT 0,
    status        TEXT    NOT NULL DEFAULT 'processing'
                  CHECK (status IN ('processing', 'ready', 'live', 'failed')),
    created_at_ms BIGINT  NOT NULL,
    updated_at_ms BIGINT  NOT NULL,
    -- 'simple' configuration: no language-specific stemming, like SQLite's unicode61.
    search_doc    TSVECTOR GENERATED ALWAYS AS (
                      setweight(to_tsvector('simple', title), 'A') ||
                      setweight(to_tsvector('simple', tags), 'B') ||
                      setweight(to_tsvector('simple', description), 'C')) STORED
);
CREATE INDEX videos_channel_created_idx ON videos (channel_id, created_at_ms);
CREATE INDEX videos_created_idx ON videos (created_at_ms);
CREATE INDEX videos_search_idx ON videos USING GIN (search_doc);

ALTER TABLE channels ADD COLUMN search_doc TSVECTOR GENERATED ALWAYS AS (
    setweight(to_tsvector('simple', replace(replace(name, '-', ' '), '_', ' ')), 'A') ||
    setweight(to_tsvector('simple', title), 'B')) STORED;
CREATE INDEX channels_search_idx ON channels USING GIN (search_doc);

CREATE TABLE subscriptions (
    id            BIGSERIAL PRIMARY KEY,
    user_id       BIGINT  NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    plan_id       TEXT    NOT NULL,
    provider      TEXT    NOT NULL CHECK (provider IN ('manual', 'stripe')),
    status        TEXT    NOT NULL CHECK (status IN ('pending', 'active', 'canceled', 'expired')),
    -- Stripe Checkout Session id, then the Stripe subscription id; NULL for manual grants.
    provider_ref  TEXT UNIQUE,
    provider_subscription TEXT UNIQUE,
    current_period_end_ms BIGINT NOT NULL DEFAULT 0,
    created_at_ms BIGINT  NOT NULL,
    updated_at_ms BIGINT  NOT NULL
);
CREATE INDEX subscriptions_user_idx ON subscriptions (user_id, status);

-- Payment provider events already applied: the primary key makes each apply exactly once.
CREATE TABLE billing_events (
    event_id      TEXT    PRIMARY KEY,
    event_type    TEXT    NOT NULL,
    received_at_ms BIGINT NOT NULL
);

CREATE TABLE watch_history (
    user_id       BIGINT  NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    video_id      BIGINT  NOT NULL REFERENCES videos (id) ON DELETE CASCADE,
    position_ms   BIGINT  NOT NULL,
    updated_at_ms BIGINT  NOT NULL,
    PRIMARY KEY (user_id, video_id)
);
CREATE INDEX watch_history_user_updated_idx ON watch_history (user_id, updated_at_ms);
CREATE INDEX watch_history_video_idx ON watch_history (video_id);

CREATE TABLE comments (
    id            BIGSERIAL PRIMARY KEY,
    video_id      BIGINT  NOT NULL REFERENCES videos (id) ON DELETE CASCADE,
    user_id       BIGINT  NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    body          TEXT    NOT NULL,
    created_at_ms BIGINT  NOT NULL
);
CREATE INDEX comments_video_idx ON comments (video_id, id);
