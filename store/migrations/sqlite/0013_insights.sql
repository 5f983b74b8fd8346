-- Voice of the customer (issue 15): each customer message's sentence embedding, cached so a
-- rerun of the insight report only embeds messages it has not seen. `model` is the
-- embedder's id: a model change re-embeds. `vector` is `dim` little-endian f32s.
-- (The best retrieval score of a turn is kept in the user message's metadata, next to its
-- sentiment and intent: `{"retrieval": {"best_score": …}}`.)
CREATE TABLE message_embeddings (
    message_id TEXT PRIMARY KEY REFERENCES messages (id),
    model      TEXT NOT NULL,
    dim        BIGINT NOT NULL,
    vector     BLOB NOT NULL,
    created_at BIGINT NOT NULL
);
