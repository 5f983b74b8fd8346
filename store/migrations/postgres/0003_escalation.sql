-- Hand-offs to people, and the outbox that delivers their notifications (Slack) even when
-- the receiver is down or the server restarts.
CREATE TABLE escalations (
    id              TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL REFERENCES conversations (id),
    message_id      TEXT,
    reason          TEXT NOT NULL,
    detail          TEXT NOT NULL,
    status          TEXT NOT NULL,
    assigned_to     TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX escalations_conversation ON escalations (conversation_id, created_at);
CREATE INDEX escalations_open ON escalations (status, created_at);

CREATE TABLE outbox (
    id              TEXT PRIMARY KEY,
    channel         TEXT NOT NULL,
    kind            TEXT NOT NULL,
    payload         TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    sent_at         BIGINT
);
CREATE INDEX outbox_due ON outbox (status, next_attempt_at);
