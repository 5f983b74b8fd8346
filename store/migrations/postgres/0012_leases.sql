-- Time-limited ownership shared by all replicas (docs/deployment.md): `name` is either a
-- conversation id (the replica answering its turn) or `job:<name>` (the replica running a
-- singleton job such as the outreach scheduler). A row past expires_at (Unix ms) is free.
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
