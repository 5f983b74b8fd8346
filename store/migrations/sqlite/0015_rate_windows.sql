-- Rate limits shared by all replicas (docs/deployment.md): hits per key (e.g. `msg:<address>`)
-- in fixed windows starting at window_start (Unix ms). Old windows are deleted as new ones start.
CREATE TABLE rate_windows (
    key TEXT NOT NULL,
    window_start BIGINT NOT NULL,
    hits BIGINT NOT NULL,
    PRIMARY KEY (key, window_start)
);
CREATE INDEX rate_windows_start ON rate_windows (window_start);
