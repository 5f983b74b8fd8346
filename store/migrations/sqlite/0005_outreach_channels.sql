-- Each attempt to deliver an outreach send through an extra channel (email, webhook/SMS),
-- successful or not, so a person can see what reached the customer and why not.
CREATE TABLE outreach_attempts (
    id          TEXT PRIMARY KEY,
    send_id     TEXT NOT NULL REFERENCES outreach_sends (id),
    channel     TEXT NOT NULL,
    attempt     BIGINT NOT NULL,
    ok          BIGINT NOT NULL,
    -- The provider's message id on success, the error on failure (never a secret).
    detail      TEXT,
    created_at  BIGINT NOT NULL
);
CREATE INDEX outreach_attempts_send ON outreach_attempts (send_id, created_at);

-- Each B2B customer's last computed health colour and since when: the `health_red` trigger
-- fires when the colour *turns* red, once per turn.
CREATE TABLE customer_health_state (
    customer_id TEXT PRIMARY KEY,
    status      TEXT NOT NULL,
    since       TEXT NOT NULL,
    updated_at  BIGINT NOT NULL
);
