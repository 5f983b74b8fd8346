//! Measurement bookings (`bookings`) and their reminders (`booking_reminders`), as other
//! crates read them. Slots are Unix seconds; `created_at` is Unix milliseconds.

use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

use crate::{Result, Store};

impl Store {
    /// Number of active bookings per slot start (Unix seconds) in `[from, to)`.
    pub async fn booked_slots(&self, from_unix: i64, to_unix: i64) -> Result<Vec<(i64, i64)>> {
        let rows = sqlx::query(
            "SELECT slot_start, COUNT(*) AS n FROM bookings
             WHERE status = 'booked' AND slot_start >= $1 AND slot_start < $2
             GROUP BY slot_start ORDER BY slot_start",
        )
        .bind(from_unix)
        .bind(to_unix)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("slot_start")?, r.try_get("n")?)))
            .collect()
    }

    /// Per customer, the latest booking made at or after `since_ms` and not cancelled.
    pub async fn latest_booking_per_customer(&self, since_ms: i64) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT customer_id, MAX(created_at) AS latest FROM bookings
             WHERE created_at >= $1 AND status <> 'cancelled' AND customer_id IS NOT NULL
             GROUP BY customer_id",
        )
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("customer_id")?, r.try_get("latest")?)))
            .collect()
    }

    /// The status of the booking behind reminder `reminder_id`, once its slot has started
    /// (`None` before then, or for an unknown reminder).
    pub async fn started_reminder_booking_status(
        &self,
        reminder_id: &str,
        now_secs: i64,
    ) -> Result<Option<String>> {
        let row = sqlx::query(
            "SELECT b.status AS status FROM booking_reminders r
             JOIN bookings b ON b.id = r.booking_id
             WHERE r.id = $1 AND b.slot_start <= $2",
        )
        .bind(reminder_id)
        .bind(now_secs)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get("status")).transpose()?)
    }
}

/// A `bookings` row. Every read of a booking goes through [`booking_from_row`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookingRecord {
    pub id: String,
    pub customer_id: Option<String>,
    /// Unix seconds.
    pub slot_start: i64,
    pub plan: String,
    pub mediation: bool,
    pub price_jpy: Option<i64>,
    pub seat: Option<i64>,
    /// `booked` or `cancelled`.
    pub status: String,
    pub notes: Option<String>,
}

/// A `booking_reminders` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReminderRecord {
    pub id: String,
    pub booking_id: String,
    pub customer_id: Option<String>,
    pub kind: String,
    /// Unix seconds.
    pub due_at: i64,
    pub status: String,
}

/// A booking to store with [`Store::book_seat`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBooking<'a> {
    pub id: &'a str,
    pub customer_id: &'a str,
    /// Unix seconds.
    pub slot_start: i64,
    pub plan: &'a str,
    pub price_jpy: i64,
    pub mediation: bool,
    pub notes: Option<&'a str>,
}

/// A reminder stored with its booking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewReminder<'a> {
    pub id: &'a str,
    pub kind: &'a str,
    /// Unix seconds.
    pub due_at: i64,
}

/// What [`Store::book_seat`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeatOutcome {
    /// Stored with its reminders, holding this seat.
    Booked { seat: i64 },
    /// The customer already holds this slot (a repeated or concurrent request).
    Existing(BookingRecord),
    /// Every seat of the slot is taken.
    Full,
}

const BOOKING_COLUMNS: &str =
    "id, customer_id, slot_start, plan, mediation, price_jpy, seat, status, notes";
const REMINDER_COLUMNS: &str = "id, booking_id, customer_id, kind, due_at, status";

fn booking_from_row(r: &AnyRow) -> Result<BookingRecord> {
    Ok(BookingRecord {
        id: r.try_get("id")?,
        customer_id: r.try_get("customer_id")?,
        slot_start: r.try_get("slot_start")?,
        plan: r.try_get("plan")?,
        mediation: r.try_get::<i64, _>("mediation")? != 0,
        price_jpy: r.try_get("price_jpy")?,
        seat: r.try_get("seat")?,
        status: r.try_get("status")?,
        notes: r.try_get("notes")?,
    })
}

fn reminder_from_row(r: &AnyRow) -> Result<ReminderRecord> {
    Ok(ReminderRecord {
        id: r.try_get("id")?,
        booking_id: r.try_get("booking_id")?,
        customer_id: r.try_get("customer_id")?,
        kind: r.try_get("kind")?,
        due_at: r.try_get("due_at")?,
        status: r.try_get("status")?,
    })
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}

impl Store {
    /// Books the first free seat `1..=capacity` of the slot, with its reminders, in one
    /// transaction per seat tried. Capacity lives in the database: a partial unique index on
    /// `(slot_start, seat) WHERE status = 'booked'` means two bookings never hold one seat,
    /// and one on `(customer_id, slot_start)` turns a repeated request into
    /// [`SeatOutcome::Existing`].
    pub async fn book_seat(
        &self,
        booking: &NewBooking<'_>,
        capacity: i64,
        reminders: &[NewReminder<'_>],
        now_ms: i64,
    ) -> Result<SeatOutcome> {
        for seat in 1..=capacity {
            let mut tx = self.begin_write().await?;
            // Rows without a seat (written before seats existed) still count against capacity.
            let active: i64 = sqlx::query(
                "SELECT COUNT(*) AS n FROM bookings WHERE slot_start = $1 AND status = 'booked'",
            )
            .bind(booking.slot_start)
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
            if active >= capacity {
                tx.rollback().await?;
                break;
            }
            let inserted = sqlx::query(
                "INSERT INTO bookings (id, customer_id, slot_start, plan, status, created_at, seat,
                    price_jpy, mediation, notes, updated_at)
                 VALUES ($1, $2, $3, $4, 'booked', $5, $6, $7, $8, $9, $5)",
            )
            .bind(booking.id)
            .bind(booking.customer_id)
            .bind(booking.slot_start)
            .bind(booking.plan)
            .bind(now_ms)
            .bind(seat)
            .bind(booking.price_jpy)
            .bind(booking.mediation as i64)
            .bind(booking.notes)
            .execute(&mut *tx)
            .await;
            match inserted {
                Ok(_) => {}
                Err(e) if is_unique_violation(&e) => {
                    tx.rollback().await?;
                    // Either the seat is taken or this customer's own concurrent request won.
                    if let Some(existing) = self
                        .active_booking_at(booking.customer_id, booking.slot_start)
                        .await?
                    {
                        return Ok(SeatOutcome::Existing(existing));
                    }
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
            for reminder in reminders {
                sqlx::query(
                    "INSERT INTO booking_reminders (id, booking_id, customer_id, kind, due_at, status, created_at)
                     VALUES ($1, $2, $3, $4, $5, 'pending', $6)",
                )
                .bind(reminder.id)
                .bind(booking.id)
                .bind(booking.customer_id)
                .bind(reminder.kind)
                .bind(reminder.due_at)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            return Ok(SeatOutcome::Booked { seat });
        }
        Ok(SeatOutcome::Full)
    }

    /// Cancels a booked booking and withdraws its pending reminders, in one transaction.
    /// `None` when it was not booked (a concurrent cancel won); otherwise the reminders
    /// withdrawn.
    pub async fn cancel_booking(&self, booking_id: &str, now_ms: i64) -> Result<Option<u64>> {
        let mut tx = self.begin_write().await?;
        let changed = sqlx::query(
            "UPDATE bookings SET status = 'cancelled', updated_at = $1 WHERE id = $2 AND status = 'booked'",
        )
        .bind(now_ms)
        .bind(booking_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 0 {
            tx.rollback().await?;
            return Ok(None);
        }
        let reminders_cancelled = sqlx::query(
            "UPDATE booking_reminders SET status = 'cancelled' WHERE booking_id = $1 AND status = 'pending'",
        )
        .bind(booking_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(Some(reminders_cancelled))
    }

    pub async fn booking(&self, id: &str) -> Result<Option<BookingRecord>> {
        let sql = format!("SELECT {BOOKING_COLUMNS} FROM bookings WHERE id = $1");
        // Only the fixed column list is spliced in; values are bound.
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(booking_from_row).transpose()
    }

    /// A customer's booked slots starting after `after_secs`, soonest first.
    pub async fn upcoming_bookings(
        &self,
        customer_id: &str,
        after_secs: i64,
    ) -> Result<Vec<BookingRecord>> {
        let sql = format!(
            "SELECT {BOOKING_COLUMNS} FROM bookings
             WHERE customer_id = $1 AND status = 'booked' AND slot_start > $2
             ORDER BY slot_start, id"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(customer_id)
            .bind(after_secs)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(booking_from_row).collect()
    }

    /// The customer's booked booking of this slot, if any.
    pub async fn active_booking_at(
        &self,
        customer_id: &str,
        slot_start: i64,
    ) -> Result<Option<BookingRecord>> {
        let sql = format!(
            "SELECT {BOOKING_COLUMNS} FROM bookings
             WHERE customer_id = $1 AND slot_start = $2 AND status = 'booked'"
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(customer_id)
            .bind(slot_start)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(booking_from_row).transpose()
    }

    /// Reminders of a booking, by due time.
    pub async fn booking_reminders(&self, booking_id: &str) -> Result<Vec<ReminderRecord>> {
        let sql = format!(
            "SELECT {REMINDER_COLUMNS} FROM booking_reminders WHERE booking_id = $1 ORDER BY due_at"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(booking_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(reminder_from_row).collect()
    }

    /// Pending reminders due at or before `now_secs`, oldest first.
    pub async fn due_reminders(&self, now_secs: i64, limit: i64) -> Result<Vec<ReminderRecord>> {
        let sql = format!(
            "SELECT {REMINDER_COLUMNS} FROM booking_reminders
             WHERE status = 'pending' AND due_at <= $1 ORDER BY due_at, id LIMIT $2"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(now_secs)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(reminder_from_row).collect()
    }

    /// Marks a pending reminder sent; false when it was no longer pending.
    pub async fn mark_reminder_sent(&self, reminder_id: &str) -> Result<bool> {
        let changed = sqlx::query(
            "UPDATE booking_reminders SET status = 'sent' WHERE id = $1 AND status = 'pending'",
        )
        .bind(reminder_id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(changed == 1)
    }
}
