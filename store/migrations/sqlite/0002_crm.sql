-- Customers imported from the CRM (shared/spec/crm-import.md), the booking seat model that
-- keeps capacity in the database, and the D-3 / D-1 / D-0 booking reminders.
-- Dates are TEXT 'YYYY-MM-DD' (sorts and compares correctly); rates are REAL; booleans are
-- BIGINT 0/1 so that sqlx's Any driver reads them the same way on both engines.
CREATE TABLE customers (
    id                   TEXT PRIMARY KEY,
    kind                 TEXT NOT NULL,
    name                 TEXT NOT NULL,
    email                TEXT,
    phone                TEXT,
    plan                 TEXT,
    monthly_measurements BIGINT,
    mrr_jpy              BIGINT,
    contract_end         TEXT,
    customer_since       TEXT,
    measurements_30d     BIGINT,
    last_login           TEXT,
    report_view_rate     REAL,
    feature_adoption     REAL,
    csat                 REAL,
    nps                  REAL,
    escalations_30d      BIGINT,
    payment_overdue_days BIGINT,
    opted_out            BIGINT NOT NULL DEFAULT 0,
    created_at           BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL
);
CREATE INDEX customers_kind ON customers (kind, plan);

-- A booking holds one numbered seat of its slot (1..capacity_per_slot). Two active bookings
-- can never hold the same seat, so concurrent bookings cannot exceed the capacity.
ALTER TABLE bookings ADD COLUMN seat BIGINT;
ALTER TABLE bookings ADD COLUMN price_jpy BIGINT;
ALTER TABLE bookings ADD COLUMN mediation BIGINT NOT NULL DEFAULT 0;
ALTER TABLE bookings ADD COLUMN notes TEXT;
ALTER TABLE bookings ADD COLUMN updated_at BIGINT;
UPDATE bookings SET seat = (
    SELECT COUNT(*) FROM bookings AS earlier
    WHERE earlier.slot_start = bookings.slot_start
      AND earlier.status = 'booked'
      AND earlier.id <= bookings.id
) WHERE status = 'booked';
CREATE UNIQUE INDEX bookings_active_seat ON bookings (slot_start, seat) WHERE status = 'booked';
CREATE UNIQUE INDEX bookings_active_customer_slot ON bookings (customer_id, slot_start) WHERE status = 'booked';
CREATE INDEX bookings_customer ON bookings (customer_id, status);

-- due_at is Unix seconds, like bookings.slot_start.
CREATE TABLE booking_reminders (
    id          TEXT PRIMARY KEY,
    booking_id  TEXT NOT NULL REFERENCES bookings (id),
    customer_id TEXT,
    kind        TEXT NOT NULL,
    due_at      BIGINT NOT NULL,
    status      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    UNIQUE (booking_id, kind)
);
CREATE INDEX booking_reminders_due ON booking_reminders (status, due_at);
