-- LINE account linking and follow state (docs/line.md). A LINE user linked to a CRM customer
-- carries the customer's id (their conversation then belongs to the customer);
-- `unfollow_opted_out` marks an outreach opt-out that a block (unfollow) caused, so that
-- following again undoes only that one, never an explicit 配信停止.
ALTER TABLE line_users ADD COLUMN customer_id TEXT;
ALTER TABLE line_users ADD COLUMN linked_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE line_users ADD COLUMN unfollow_opted_out BIGINT NOT NULL DEFAULT 0;
CREATE INDEX line_users_customer ON line_users (customer_id);

-- The nonce of every link token redeemed: a token links once.
CREATE TABLE line_link_nonces (
    nonce       TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    used_at     BIGINT NOT NULL
);
