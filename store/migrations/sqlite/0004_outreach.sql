-- Proactive outreach. One row per (customer, trigger, cause): the UNIQUE key makes a trigger
-- that fires twice for the same cause send once, across restarts and replicas, because a
-- sender claims the row by INSERT before delivering.
CREATE TABLE outreach_sends (
    id           TEXT PRIMARY KEY,
    customer_id  TEXT NOT NULL,
    trigger_slug TEXT NOT NULL,
    cause_key    TEXT NOT NULL,
    campaign_id  TEXT NOT NULL,
    variant      TEXT NOT NULL,
    status       TEXT NOT NULL,
    template_id  TEXT,
    message      TEXT,
    live         BIGINT NOT NULL DEFAULT 0,
    created_at   BIGINT NOT NULL,
    sent_at      BIGINT,
    UNIQUE (customer_id, trigger_slug, cause_key)
);
CREATE INDEX outreach_sends_recent ON outreach_sends (customer_id, sent_at);
CREATE INDEX outreach_sends_status ON outreach_sends (status, created_at);

-- What happened to a send afterwards: delivered, opened, replied, converted (once each).
CREATE TABLE outreach_events (
    id          TEXT PRIMARY KEY,
    send_id     TEXT NOT NULL REFERENCES outreach_sends (id),
    kind        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    UNIQUE (send_id, kind)
);
