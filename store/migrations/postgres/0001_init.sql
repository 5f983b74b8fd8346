-- Conversations, messages, tool calls and the durable frame log used for websocket resume.
CREATE TABLE conversations (
    id          TEXT PRIMARY KEY,
    owner_role  TEXT NOT NULL,
    owner_id    TEXT NOT NULL,
    customer_id TEXT,
    status      TEXT NOT NULL DEFAULT 'bot',
    last_seq    BIGINT NOT NULL DEFAULT 0,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX conversations_owner ON conversations (owner_role, owner_id);

CREATE TABLE messages (
    id              TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL REFERENCES conversations (id),
    client_msg_id   TEXT,
    role            TEXT NOT NULL,
    content         TEXT NOT NULL,
    reply_to        TEXT,
    status          TEXT NOT NULL,
    metadata        TEXT NOT NULL DEFAULT '{}',
    created_at      BIGINT NOT NULL,
    UNIQUE (conversation_id, client_msg_id)
);
CREATE INDEX messages_conversation ON messages (conversation_id, created_at);
CREATE INDEX messages_pending ON messages (status);

CREATE TABLE tool_calls (
    id              TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL REFERENCES conversations (id),
    message_id      TEXT NOT NULL,
    name            TEXT NOT NULL,
    arguments       TEXT NOT NULL,
    result          TEXT NOT NULL,
    ok              BIGINT NOT NULL,
    duration_ms     BIGINT NOT NULL,
    created_at      BIGINT NOT NULL
);
CREATE INDEX tool_calls_conversation ON tool_calls (conversation_id);

CREATE TABLE frames (
    conversation_id TEXT NOT NULL REFERENCES conversations (id),
    seq             BIGINT NOT NULL,
    payload         TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    PRIMARY KEY (conversation_id, seq)
);

CREATE TABLE bookings (
    id          TEXT PRIMARY KEY,
    customer_id TEXT,
    slot_start  BIGINT NOT NULL,
    plan        TEXT NOT NULL,
    status      TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX bookings_slot ON bookings (slot_start, status);
