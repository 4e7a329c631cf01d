-- Platform API schema, SQLite dialect: videos, subscriptions, billing events, watch history,
-- comments, and full-text search. Keep in step with migrations/postgres/0002_platform.sql.

CREATE TABLE videos (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    channel_id    INTEGER REFERENCES channels (id) ON DELETE CASCADE,
    owner_id      INTEGER REFERENCES users (id) ON DELETE SET NULL,
    title         TEXT    NOT NULL,
    description   TEXT    NOT NULL DEFAULT '',
    -- Space-separated lowercase tags (no spaces inside a tag).
    tags          TEXT    NOT NULL DEFAULT '',
    visibility    TEXT    NOT NULL DEFAULT 'public'
                  CHECK (visibility IN ('public', 'subscribers', 'private')),
    source        TEXT    NOT NULL CHECK (source IN ('upload', 'live')),
    duration_ms   INTEGER NOT NULL DEFAULT 0,
    status        TEXT    NOT NULL DEFAULT 'processing'
                  CHECK (status IN ('processing', 'ready', 'live', 'failed')),
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
CREATE INDEX videos_channel_created_idx ON videos (channel_id, created_at_ms);
CREATE INDEX videos_created_idx ON videos (created_at_ms);

CREATE TABLE subscriptions (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id       INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    plan_id       TEXT    NOT NULL,
    provider      TEXT    NOT NULL CHECK (provider IN ('manual', 'stripe')),
    status        TEXT    NOT NULL CHECK (status IN ('pending', 'active', 'canceled', 'expired')),
    -- Stripe Checkout Session id, then the Stripe subscription id; NULL for manual grants.
    provider_ref  TEXT UNIQUE,
    provider_subscription TEXT UNIQUE,
    current_period_end_ms INTEGER NOT NULL DEFAULT 0,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
CREATE INDEX subscriptions_user_idx ON subscriptions (user_id, status);

-- Payment provider events already applied: the primary key makes each apply exactly once.
CREATE TABLE billing_events (
    event_id      TEXT    PRIMARY KEY,
    event_type    TEXT    NOT NULL,
    received_at_ms INTEGER NOT NULL
);

CREATE TABLE watch_history (
    user_id       INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    video_id      INTEGER NOT NULL REFERENCES videos (id) ON DELETE CASCADE,
    position_ms   INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (user_id, video_id)
);
CREATE INDEX watch_history_user_updated_idx ON watch_history (user_id, updated_at_ms);
CREATE INDEX watch_history_video_idx ON watch_history (video_id);

CREATE TABLE comments (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    video_id      INTEGER NOT NULL REFERENCES videos (id) ON DELETE CASCADE,
    user_id       INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    body          TEXT    NOT NULL,
    created_at_ms INTEGER NOT NULL
);
CREATE INDEX comments_video_idx ON comments (video_id, id);

-- Full-text search (FTS5, bundled with sqlx's SQLite). Contentless-delete tables keyed by the
-- row id of the video or channel, kept in step by triggers; bm25() ranks.
CREATE VIRTUAL TABLE videos_fts USING fts5 (title, description, tags, channel_name, tokenize = 'unicode61 remove_diacritics 2');
CREATE VIRTUAL TABLE channels_fts USING fts5 (name, title, tokenize = 'unicode61 remove_diacritics 2');

CREATE TRIGGER videos_fts_ai AFTER INSERT ON videos BEGIN
    INSERT INTO videos_fts (rowid, title, description, tags, channel_name)
    VALUES (new.id, new.title, new.description, new.tags,
            COALESCE((SELECT name || ' ' || title FROM channels WHERE id = new.channel_id), ''));
END;
CREATE TRIGGER videos_fts_ad AFTER DELETE ON videos BEGIN
    DELETE FROM videos_fts WHERE rowid = old.id;
END;
CREATE TRIGGER videos_fts_au AFTER UPDATE OF title, description, tags, channel_id ON videos BEGIN
    DELETE FROM videos_fts WHERE rowid = old.id;
    INSERT INTO videos_fts (rowid, title, description, tags, channel_name)
    VALUES (new.id, new.title, new.description, new.tags,
            COALESCE((SELECT name || ' ' || title FROM channels WHERE id = new.channel_id), ''));
END;

INSERT INTO channels_fts (rowid, name, title) SELECT id, name, title FROM channels;
CREATE TRIGGER channels_fts_ai AFTER INSERT ON channels BEGIN
    INSERT INTO channels_fts (rowid, name, title) VALUES (new.id, new.name, new.title);
END;
CREATE TRIGGER channels_fts_ad AFTER DELETE ON channels BEGIN
    DELETE FROM channels_fts WHERE rowid = old.id;
END;
CREATE TRIGGER channels_fts_au AFTER UPDATE OF name, title ON channels BEGIN
    DELETE FROM channels_fts WHERE rowid = old.id;
    INSERT INTO channels_fts (rowid, name, title) VALUES (new.id, new.name, new.title);
END;
