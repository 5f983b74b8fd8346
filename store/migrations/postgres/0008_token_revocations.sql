-- Tokens and subjects staff revoked (docs/security.md, "Tokens"). kind is 'token' (value:
-- the token id, a SHA-256 prefix of the token, never the token itself) or 'subject' (every
-- token of that customer or manager id). Rows past expires_at no longer matter.
CREATE TABLE token_revocations (
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    reason TEXT,
    revoked_by TEXT NOT NULL,
    revoked_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (kind, value)
);
