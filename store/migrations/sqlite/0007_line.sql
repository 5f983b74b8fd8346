-- The LINE channel (docs/line.md): one conversation per LINE user, the reply token of the
-- user's latest message while it may still be used, how far the conversation's frames have
-- been forwarded to LINE, and whether the user follows the account (follow/unfollow).
CREATE TABLE line_users (
    user_id         TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL,
    following       BIGINT NOT NULL DEFAULT 1,
    reply_token     TEXT,
    reply_token_at  BIGINT NOT NULL DEFAULT 0,
    forwarded_seq   BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

-- webhookEventId of every event handled: a redelivered event is recognised and dropped.
CREATE TABLE line_events (
    event_id    TEXT PRIMARY KEY,
    received_at BIGINT NOT NULL
);
