-- Churn (issue 15): the day a customer left (labels for training; blank = still a customer),
-- two optional usage columns for the features, and the trained models, versioned, with their
-- metrics. A model is its JSON (kizuna-churn's ChurnModel); the newest version predicts.
ALTER TABLE customers ADD COLUMN churned_at TEXT;
ALTER TABLE customers ADD COLUMN measurements_90d BIGINT;
ALTER TABLE customers ADD COLUMN logins_30d BIGINT;
CREATE TABLE churn_models (
    version      BIGINT PRIMARY KEY,
    created_at   BIGINT NOT NULL,
    as_of        TEXT NOT NULL,
    trained_rows BIGINT NOT NULL,
    positives    BIGINT NOT NULL,
    metrics      TEXT NOT NULL,
    model        TEXT NOT NULL
);
