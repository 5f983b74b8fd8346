//! Measurement bookings and their reminders (seed 003 §5.1: D-3 「測定の準備について」,
//! D-1 「明日測定です」, D-0 「スタッフが向かっています」), and the `book_measurement` and
//! `cancel_booking` tools.
//!
//! Capacity lives in the database, not in this process: an active booking holds a numbered
//! seat `1..=capacity_per_slot` of its slot, and a partial unique index on
//! `(slot_start, seat) WHERE status = 'booked'` means two bookings can never hold the same
//! seat, however many servers or tasks book at once. A booking tries the seats in order and
//! treats a unique violation as "taken". A second unique index on `(customer_id, slot_start)`
//! makes a repeated request for the same slot return the existing booking.
//!
//! Times: `slot_start` and reminder `due_at` are Unix seconds; `created_at` / `updated_at`
//! are Unix milliseconds, like the rest of the store.

use async_trait::async_trait;
use chrono::{DateTime, Duration, FixedOffset, NaiveDateTime, NaiveTime, TimeZone};
use kizuna_agent::clock::jst;
use kizuna_agent::identity::Role;
use kizuna_agent::tool::{
    Audience, RiskClass, Tool, ToolContext, ToolEffect, ToolError, ToolOutput,
};
use kizuna_store::{BookingRecord, NewBooking, NewReminder, ReminderRecord, SeatOutcome, Store};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::access::{self, LOGIN_REQUIRED, OTHER_ACCOUNT};
use crate::availability::{slot_label, BookingCalendar, CalendarError, SlotProblem};
use crate::plans::{self, yen};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Booking {
    pub id: String,
    pub customer_id: String,
    pub slot_start: DateTime<FixedOffset>,
    pub plan: String,
    pub mediation: bool,
    pub price_jpy: i64,
    pub seat: Option<i64>,
    /// `booked` or `cancelled`.
    pub status: String,
    pub notes: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReminderKind {
    /// Three days before, 10:00 JST: how to prepare (video).
    D3,
    /// The day before, 10:00 JST: 「明日測定です」.
    D1,
    /// One hour before the start: the staff are on their way.
    D0,
}

impl ReminderKind {
    pub const ALL: [ReminderKind; 3] = [ReminderKind::D3, ReminderKind::D1, ReminderKind::D0];

    pub fn as_str(self) -> &'static str {
        match self {
            ReminderKind::D3 => "d3",
            ReminderKind::D1 => "d1",
            ReminderKind::D0 => "d0",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == value)
    }

    /// The message's subject (seed 003 §5.1).
    pub fn title_ja(self) -> &'static str {
        match self {
            ReminderKind::D3 => "測定の準備について",
            ReminderKind::D1 => "明日測定です",
            ReminderKind::D0 => "スタッフが向かっています",
        }
    }

    /// When this reminder is due for a measurement starting at `slot_start`.
    pub fn due_at(self, slot_start: DateTime<FixedOffset>) -> DateTime<FixedOffset> {
        let tz = jst();
        let start = slot_start.with_timezone(&tz);
        let morning = |days_before: i64| {
            let date = start.date_naive() - Duration::days(days_before);
            tz.from_local_datetime(
                &date.and_time(NaiveTime::from_hms_opt(10, 0, 0).expect("valid")),
            )
            .single()
            .expect("JST has no gaps")
        };
        match self {
            ReminderKind::D3 => morning(3),
            ReminderKind::D1 => morning(1),
            ReminderKind::D0 => start - Duration::hours(1),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reminder {
    pub id: String,
    pub booking_id: String,
    pub customer_id: String,
    pub kind: ReminderKind,
    pub due_at: DateTime<FixedOffset>,
    /// `pending`, `sent` or `cancelled`.
    pub status: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BookingError {
    #[error("{0}")]
    Slot(#[from] SlotProblem),
    #[error("unknown plan {0:?}: use light, standard or premium")]
    UnknownPlan(String),
    #[error("the slot is fully booked")]
    Full,
    #[error(transparent)]
    Database(#[from] kizuna_store::StoreError),
    #[error("stored booking is corrupt: {0}")]
    Corrupt(String),
}

/// What [`book`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum BookingOutcome {
    /// A new booking, with the reminders that were scheduled (past ones are skipped).
    Created {
        booking: Booking,
        reminders: Vec<Reminder>,
    },
    /// This customer already holds this slot; nothing changed.
    Existing(Booking),
}

/// What to book.
#[derive(Debug, Clone, PartialEq)]
pub struct BookingRequest<'a> {
    pub customer_id: &'a str,
    pub slot_start: DateTime<FixedOffset>,
    pub plan: &'a str,
    pub mediation: bool,
    pub notes: Option<&'a str>,
}

/// Books a seat of a calendar slot for a customer, and schedules its reminders, in one
/// transaction per seat tried. Safe under any number of concurrent callers.
pub async fn book(
    store: &Store,
    calendar: &BookingCalendar,
    request: &BookingRequest<'_>,
    now: DateTime<FixedOffset>,
) -> Result<BookingOutcome, BookingError> {
    let plan = plans::by_id(request.plan)
        .ok_or_else(|| BookingError::UnknownPlan(request.plan.to_string()))?;
    calendar.check_slot(request.slot_start, now)?;
    let slot = request.slot_start.timestamp();
    if let Some(existing) = active_booking_at(store, request.customer_id, slot).await? {
        return Ok(BookingOutcome::Existing(existing));
    }
    let price = plan.price_jpy as i64
        + if request.mediation {
            plans::MEDIATION.price_jpy as i64
        } else {
            0
        };
    let mut booking = Booking {
        id: new_id("BK"),
        customer_id: request.customer_id.to_string(),
        slot_start: request.slot_start.with_timezone(&jst()),
        plan: plan.id.to_string(),
        mediation: request.mediation,
        price_jpy: price,
        seat: None,
        status: "booked".into(),
        notes: request.notes.map(str::to_string),
    };
    // Reminders already due are skipped.
    let reminders: Vec<Reminder> = ReminderKind::ALL
        .into_iter()
        .map(|kind| (kind, kind.due_at(booking.slot_start)))
        .filter(|(_, due_at)| *due_at > now)
        .map(|(kind, due_at)| Reminder {
            id: new_id("RM"),
            booking_id: booking.id.clone(),
            customer_id: booking.customer_id.clone(),
            kind,
            due_at,
            status: "pending".into(),
        })
        .collect();
    let new_reminders: Vec<NewReminder<'_>> = reminders
        .iter()
        .map(|r| NewReminder {
            id: &r.id,
            kind: r.kind.as_str(),
            due_at: r.due_at.timestamp(),
        })
        .collect();
    let outcome = store
        .book_seat(
            &NewBooking {
                id: &booking.id,
                customer_id: &booking.customer_id,
                slot_start: slot,
                plan: &booking.plan,
                price_jpy: price,
                mediation: booking.mediation,
                notes: booking.notes.as_deref(),
            },
            calendar.capacity_per_slot as i64,
            &new_reminders,
            now.timestamp_millis(),
        )
        .await?;
    match outcome {
        SeatOutcome::Booked { seat } => {
            booking.seat = Some(seat);
            tracing::info!(booking = %booking.id, seat, slot, "measurement booked");
            Ok(BookingOutcome::Created { booking, reminders })
        }
        SeatOutcome::Existing(existing) => {
            Ok(BookingOutcome::Existing(booking_from_record(existing)?))
        }
        SeatOutcome::Full => Err(BookingError::Full),
    }
}

/// What [`cancel`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum CancelOutcome {
    /// Cancelled now; `reminders_cancelled` pending reminders were withdrawn.
    Cancelled {
        booking: Booking,
        reminders_cancelled: u64,
    },
    AlreadyCancelled(Booking),
    /// The measurement has started or is over.
    Started(Booking),
}

/// Cancels a booking (freeing its seat) and its pending reminders. The caller checks that
/// the booking belongs to whoever asks.
pub async fn cancel(
    store: &Store,
    booking_id: &str,
    now: DateTime<FixedOffset>,
) -> Result<Option<CancelOutcome>, BookingError> {
    let Some(booking) = booking_by_id(store, booking_id).await? else {
        return Ok(None);
    };
    if booking.status != "booked" {
        return Ok(Some(CancelOutcome::AlreadyCancelled(booking)));
    }
    if booking.slot_start <= now {
        return Ok(Some(CancelOutcome::Started(booking)));
    }
    let Some(reminders_cancelled) = store
        .cancel_booking(booking_id, now.timestamp_millis())
        .await?
    else {
        // A concurrent cancel won.
        let mut booking = booking;
        booking.status = "cancelled".into();
        return Ok(Some(CancelOutcome::AlreadyCancelled(booking)));
    };
    let mut booking = booking;
    booking.status = "cancelled".into();
    tracing::info!(booking = %booking.id, "booking cancelled");
    Ok(Some(CancelOutcome::Cancelled {
        booking,
        reminders_cancelled,
    }))
}

pub async fn booking_by_id(store: &Store, id: &str) -> Result<Option<Booking>, BookingError> {
    store
        .booking(id)
        .await?
        .map(booking_from_record)
        .transpose()
}

/// A customer's active bookings starting after `now`, soonest first.
pub async fn upcoming_bookings(
    store: &Store,
    customer_id: &str,
    now: DateTime<FixedOffset>,
) -> Result<Vec<Booking>, BookingError> {
    store
        .upcoming_bookings(customer_id, now.timestamp())
        .await?
        .into_iter()
        .map(booking_from_record)
        .collect()
}

async fn active_booking_at(
    store: &Store,
    customer_id: &str,
    slot: i64,
) -> Result<Option<Booking>, BookingError> {
    store
        .active_booking_at(customer_id, slot)
        .await?
        .map(booking_from_record)
        .transpose()
}

/// Reminders of a booking, by due time.
pub async fn reminders_for_booking(
    store: &Store,
    booking_id: &str,
) -> Result<Vec<Reminder>, BookingError> {
    store
        .booking_reminders(booking_id)
        .await?
        .into_iter()
        .map(reminder_from_record)
        .collect()
}

/// Pending reminders due at or before `now`, oldest first: what a sender should deliver.
pub async fn due_reminders(
    store: &Store,
    now: DateTime<FixedOffset>,
    limit: i64,
) -> Result<Vec<Reminder>, BookingError> {
    store
        .due_reminders(now.timestamp(), limit)
        .await?
        .into_iter()
        .map(reminder_from_record)
        .collect()
}

/// Marks a pending reminder sent; false when it was no longer pending (sent or cancelled).
pub async fn mark_reminder_sent(store: &Store, reminder_id: &str) -> Result<bool, BookingError> {
    Ok(store.mark_reminder_sent(reminder_id).await?)
}

fn from_unix(seconds: i64) -> Result<DateTime<FixedOffset>, BookingError> {
    DateTime::from_timestamp(seconds, 0)
        .map(|t| t.with_timezone(&jst()))
        .ok_or_else(|| BookingError::Corrupt(format!("timestamp {seconds}")))
}

fn booking_from_record(r: BookingRecord) -> Result<Booking, BookingError> {
    Ok(Booking {
        slot_start: from_unix(r.slot_start)?,
        id: r.id,
        customer_id: r.customer_id.unwrap_or_default(),
        plan: r.plan,
        mediation: r.mediation,
        price_jpy: r.price_jpy.unwrap_or(0),
        seat: r.seat,
        status: r.status,
        notes: r.notes,
    })
}

fn reminder_from_record(r: ReminderRecord) -> Result<Reminder, BookingError> {
    Ok(Reminder {
        kind: ReminderKind::parse(&r.kind)
            .ok_or_else(|| BookingError::Corrupt(format!("reminder kind {:?}", r.kind)))?,
        due_at: from_unix(r.due_at)?,
        id: r.id,
        booking_id: r.booking_id,
        customer_id: r.customer_id.unwrap_or_default(),
        status: r.status,
    })
}

/// `BK-` + 12 hex digits: short enough to read out, 48 random bits.
fn new_id(prefix: &str) -> String {
    let hex = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", hex[..12].to_ascii_uppercase())
}

/// A slot start as the model writes it: RFC 3339 with an offset, or a local JST time
/// `YYYY-MM-DDTHH:MM[:SS]` / `YYYY-MM-DD HH:MM`.
pub fn parse_slot_start(value: &str) -> Option<DateTime<FixedOffset>> {
    let value = value.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        return Some(t.with_timezone(&jst()));
    }
    let local = [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(value, f).ok())?;
    jst().from_local_datetime(&local).single()
}

fn booking_summary(booking: &Booking) -> Value {
    json!({
        "booking_id": booking.id,
        "start": booking.slot_start.to_rfc3339(),
        "label": slot_label(booking.slot_start),
        "plan": booking.plan,
        "mediation": booking.mediation,
        "price_jpy": booking.price_jpy,
        "price": yen(booking.price_jpy.max(0) as u32),
        "status": booking.status,
    })
}

fn plan_line(booking: &Booking) -> String {
    let plan = plans::by_id(&booking.plan);
    let mut line = match plan {
        Some(p) => format!("{}（{}）", p.name, yen(p.price_jpy)),
        None => booking.plan.clone(),
    };
    if booking.mediation {
        line.push_str(&format!(
            "＋{}（{}）",
            plans::MEDIATION.name,
            yen(plans::MEDIATION.price_jpy)
        ));
    }
    line
}

/// `book_measurement`: books a measurement visit for the logged-in customer.
pub struct BookMeasurement {
    store: Store,
    calendar: BookingCalendar,
}

impl BookMeasurement {
    pub fn new(store: Store, calendar: BookingCalendar) -> Result<Self, CalendarError> {
        calendar.validate()?;
        Ok(Self { store, calendar })
    }
}

#[derive(Debug, Deserialize)]
struct RawBookArgs {
    slot_start: String,
    plan: String,
    #[serde(default)]
    mediation: bool,
    notes: Option<String>,
}

/// `book_measurement`'s arguments, checked.
struct BookArgs {
    slot_start: DateTime<FixedOffset>,
    plan: String,
    mediation: bool,
    notes: Option<String>,
}

impl BookArgs {
    fn parse(args: Value) -> Result<Self, ToolError> {
        let raw: RawBookArgs =
            serde_json::from_value(args).map_err(|e| ToolError::InvalidArguments(e.to_string()))?;
        let slot_start = parse_slot_start(&raw.slot_start).ok_or_else(|| {
            ToolError::InvalidArguments(format!(
                "slot_start {:?} is not an ISO 8601 date and time",
                raw.slot_start
            ))
        })?;
        let notes = raw
            .notes
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_string);
        if notes
            .as_deref()
            .is_some_and(|n| n.chars().count() > MAX_NOTES_CHARS)
        {
            return Err(ToolError::InvalidArguments(format!(
                "notes are longer than {MAX_NOTES_CHARS} characters"
            )));
        }
        Ok(Self {
            slot_start,
            plan: raw.plan,
            mediation: raw.mediation,
            notes,
        })
    }
}

const MAX_NOTES_CHARS: usize = 500;

#[async_trait]
impl Tool for BookMeasurement {
    fn name(&self) -> &str {
        "book_measurement"
    }

    fn description(&self) -> &str {
        "ログイン中のお客様の騒音測定の訪問予約を確定する（check_availability で案内した枠の開始日時とプランを指定）"
    }

    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "slot_start": {"type": "string", "description": "start of the slot, ISO 8601 in JST, e.g. 2026-11-23T19:00:00+09:00 (the slot_id from check_availability)"},
                "plan": {"type": "string", "enum": ["light", "standard", "premium"]},
                "mediation": {"type": "boolean", "description": "add the AI mediation service (+8,000円)"},
                "notes": {"type": "string", "description": "anything the staff should know (max 500 characters)"}
            },
            "required": ["slot_start", "plan"]
        })
    }

    fn risk(&self) -> RiskClass {
        RiskClass::Write
    }

    fn audience(&self) -> Audience {
        Audience::Customers
    }

    /// What would be booked, checked against the calendar and the seats left, for the
    /// customer to consent to; nothing is written.
    async fn preview(&self, ctx: &ToolContext, args: Value) -> Result<ToolOutput, ToolError> {
        let customer_id = access::require_customer(ctx)?;
        let args = BookArgs::parse(args)?;
        let plan = plans::by_id(&args.plan).ok_or_else(|| {
            ToolError::InvalidArguments(format!(
                "unknown plan {:?}: use light, standard or premium",
                args.plan
            ))
        })?;
        let label = slot_label(args.slot_start);
        let impossible = |why: String| {
            Ok(ToolOutput {
                data: json!({"possible": false, "start": args.slot_start.to_rfc3339(), "reason": why}),
                display: why,
                must_quote: vec![],
                effects: Vec::new(),
            })
        };
        if let Err(problem) = self.calendar.check_slot(args.slot_start, ctx.now) {
            return impossible(format!("{label}〜: {}", problem.message_ja()));
        }
        let slot = args.slot_start.timestamp();
        let existing = active_booking_at(&self.store, &customer_id, slot)
            .await
            .map_err(|e| ToolError::Failed(e.to_string()))?;
        if let Some(existing) = existing {
            return impossible(format!(
                "{label}〜はすでにご予約済みです（予約番号 {}）。",
                existing.id
            ));
        }
        let taken = self
            .store
            .booked_slots(slot, slot + 1)
            .await
            .map_err(|e| ToolError::Failed(e.to_string()))?
            .iter()
            .find(|(s, _)| *s == slot)
            .map(|(_, n)| *n)
            .unwrap_or(0);
        if taken >= self.calendar.capacity_per_slot as i64 {
            return impossible(format!("申し訳ありません。{label}〜の枠は満席です。"));
        }
        let total = plan.price_jpy
            + if args.mediation {
                plans::MEDIATION.price_jpy
            } else {
                0
            };
        let mut lines = vec![
            "次の内容でご予約をお取りします。".to_string(),
            // The end, so "what time does it finish?" is answered by the proposal itself.
            format!(
                "・日時: {label}〜{}（{}時間の測定）",
                (args.slot_start + chrono::Duration::hours(i64::from(plan.measurement_hours)))
                    .with_timezone(&kizuna_agent::clock::jst())
                    .format("%H:%M"),
                plan.measurement_hours
            ),
            format!("・プラン: {}（{}）", plan.name, yen(plan.price_jpy)),
        ];
        if args.mediation {
            lines.push(format!(
                "・オプション: {}（+{}）",
                plans::MEDIATION.name,
                yen(plans::MEDIATION.price_jpy)
            ));
        }
        lines.push(format!("・料金合計: {}", yen(total)));
        Ok(ToolOutput {
            data: json!({
                "possible": true, "start": args.slot_start.to_rfc3339(), "label": label,
                "plan": plan.id, "mediation": args.mediation, "price_jpy": total,
            }),
            display: lines.join("\n"),
            must_quote: vec![label, yen(total)],
            effects: Vec::new(),
        })
    }

    async fn call(&self, ctx: &ToolContext, args: Value) -> Result<ToolOutput, ToolError> {
        let customer_id = access::require_customer(ctx)?;
        let args = BookArgs::parse(args)?;
        let slot_start = args.slot_start;
        let request = BookingRequest {
            customer_id: &customer_id,
            slot_start,
            plan: &args.plan,
            mediation: args.mediation,
            notes: args.notes.as_deref(),
        };
        match book(&self.store, &self.calendar, &request, ctx.now).await {
            Ok(BookingOutcome::Created { booking, reminders }) => {
                let label = slot_label(booking.slot_start);
                let price = yen(booking.price_jpy.max(0) as u32);
                let reminder_note = if reminders.is_empty() {
                    String::new()
                } else {
                    let names: Vec<&str> = reminders
                        .iter()
                        .map(|r| match r.kind {
                            ReminderKind::D3 => "3日前",
                            ReminderKind::D1 => "前日",
                            ReminderKind::D0 => "当日",
                        })
                        .collect();
                    format!("\n測定の{}にご案内をお送りします。", names.join("・"))
                };
                let display = format!(
                    "ご予約を承りました。\n・日時: {label}〜\n・プラン: {}\n・料金合計: {price}\n・予約番号: {}{reminder_note}",
                    plan_line(&booking),
                    booking.id
                );
                let mut data = booking_summary(&booking);
                data["created"] = json!(true);
                data["reminders"] = json!(reminders
                    .iter()
                    .map(|r| json!({"kind": r.kind, "due_at": r.due_at.to_rfc3339()}))
                    .collect::<Vec<_>>());
                Ok(ToolOutput {
                    data,
                    display,
                    must_quote: vec![label, price],
                    effects: vec![ToolEffect::BookingCreated {
                        booking_id: booking.id.clone(),
                    }],
                })
            }
            Ok(BookingOutcome::Existing(booking)) => {
                let label = slot_label(booking.slot_start);
                let price = yen(booking.price_jpy.max(0) as u32);
                let mut data = booking_summary(&booking);
                data["created"] = json!(false);
                Ok(ToolOutput {
                    data,
                    display: format!(
                        "この日時のご予約はすでに承っております。\n・日時: {label}〜\n・プラン: {}\n・料金合計: {price}\n・予約番号: {}",
                        plan_line(&booking),
                        booking.id
                    ),
                    must_quote: vec![label, price],
                    effects: Vec::new(),
                })
            }
            Err(BookingError::Full) => Ok(ToolOutput {
                data: json!({"created": false, "reason": "full", "start": slot_start.to_rfc3339()}),
                display: format!(
                    "申し訳ありません。{}〜の枠はちょうど満席になりました。別の日時をお調べしますので、ご希望をお知らせください。",
                    slot_label(slot_start)
                ),
                must_quote: vec![],
                effects: Vec::new(),
            }),
            Err(BookingError::Slot(problem)) => Err(ToolError::InvalidArguments(format!(
                "{} ({problem})",
                problem.message_ja()
            ))),
            Err(BookingError::UnknownPlan(plan)) => Err(ToolError::InvalidArguments(format!(
                "unknown plan {plan:?}: use light, standard or premium"
            ))),
            Err(e) => Err(ToolError::Failed(e.to_string())),
        }
    }
}

/// `cancel_booking`: customers cancel their own bookings; managers may cancel any booking
/// by id. Without a booking id, a customer's only upcoming booking is cancelled.
pub struct CancelBooking {
    store: Store,
}

impl CancelBooking {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// The booking a cancellation is for: the named one (if it is the caller's), else a
    /// customer's only upcoming booking; with several, the list to choose from.
    async fn target(&self, ctx: &ToolContext, args: Value) -> Result<Target, ToolError> {
        let args: CancelArgs =
            serde_json::from_value(args).map_err(|e| ToolError::InvalidArguments(e.to_string()))?;
        let requested = args
            .booking_id
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty());
        let failed = |e: BookingError| ToolError::Failed(e.to_string());
        let booking_id = match (ctx.identity.role, requested) {
            (Role::Anonymous, _) => return Err(ToolError::Forbidden(LOGIN_REQUIRED.into())),
            (Role::Manager, None) => {
                return Err(ToolError::InvalidArguments(
                    "booking_id is required for managers".into(),
                ))
            }
            (Role::Manager, Some(id)) => id.to_string(),
            (Role::Customer, requested) => {
                let own = access::require_customer(ctx)?;
                match requested {
                    Some(id) => {
                        let booking = booking_by_id(&self.store, id)
                            .await
                            .map_err(failed)?
                            .ok_or_else(|| {
                                ToolError::NotFound(format!(
                                    "予約番号 {id} のご予約は見つかりません"
                                ))
                            })?;
                        if booking.customer_id != own {
                            return Err(ToolError::Forbidden(OTHER_ACCOUNT.into()));
                        }
                        booking.id
                    }
                    None => {
                        let upcoming = upcoming_bookings(&self.store, &own, ctx.now)
                            .await
                            .map_err(failed)?;
                        match upcoming.as_slice() {
                            [] => {
                                return Err(ToolError::NotFound(
                                    "キャンセルできる今後のご予約はありません".into(),
                                ))
                            }
                            [only] => only.id.clone(),
                            many => {
                                let lines: Vec<String> = many
                                    .iter()
                                    .map(|b| {
                                        format!(
                                            "・{}〜（予約番号 {}）",
                                            slot_label(b.slot_start),
                                            b.id
                                        )
                                    })
                                    .collect();
                                return Ok(Target::Choose(ToolOutput {
                                    data: json!({
                                        "cancelled": false,
                                        "reason": "choose_booking",
                                        "bookings": many.iter().map(booking_summary).collect::<Vec<_>>(),
                                    }),
                                    display: format!(
                                        "今後のご予約が{}件あります。どちらをキャンセルなさいますか。\n{}",
                                        many.len(),
                                        lines.join("\n")
                                    ),
                                    must_quote: vec![],
                                    effects: Vec::new(),
                                }));
                            }
                        }
                    }
                }
            }
        };
        Ok(Target::Booking(booking_id))
    }
}

/// What a cancellation request points at.
enum Target {
    Booking(String),
    /// Several upcoming bookings: the customer must say which.
    Choose(ToolOutput),
}

#[derive(Debug, Default, Deserialize)]
struct CancelArgs {
    booking_id: Option<String>,
}

#[async_trait]
impl Tool for CancelBooking {
    fn name(&self) -> &str {
        "cancel_booking"
    }

    fn description(&self) -> &str {
        "ログイン中のお客様ご本人の測定予約をキャンセルする（予約番号を省略すると今後の予約が1件だけの場合にそれをキャンセル）"
    }

    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "booking_id": {"type": "string", "description": "予約番号 (BK-…)"}
            }
        })
    }

    fn risk(&self) -> RiskClass {
        RiskClass::Write
    }

    fn audience(&self) -> Audience {
        Audience::SignedIn
    }

    /// Which booking would be cancelled, for the customer to consent to; nothing changes.
    async fn preview(&self, ctx: &ToolContext, args: Value) -> Result<ToolOutput, ToolError> {
        let booking_id = match self.target(ctx, args).await? {
            Target::Booking(id) => id,
            Target::Choose(output) => return Ok(output),
        };
        let booking = booking_by_id(&self.store, &booking_id)
            .await
            .map_err(|e| ToolError::Failed(e.to_string()))?
            .ok_or_else(|| {
                ToolError::NotFound(format!("予約番号 {booking_id} のご予約は見つかりません"))
            })?;
        let label = slot_label(booking.slot_start);
        let (possible, display) = if booking.status != "booked" {
            (
                false,
                format!(
                    "予約番号 {} のご予約はすでにキャンセルされています。",
                    booking.id
                ),
            )
        } else if booking.slot_start <= ctx.now {
            (false, "開始時刻を過ぎたご予約はこちらではキャンセルできません。担当者がご対応しますので、状況をお知らせください。".to_string())
        } else {
            (
                true,
                format!(
                    "次のご予約をキャンセルします。\n・日時: {label}〜\n・プラン: {}\n・予約番号: {}",
                    plan_line(&booking),
                    booking.id
                ),
            )
        };
        let mut data = booking_summary(&booking);
        data["possible"] = json!(possible);
        Ok(ToolOutput {
            data,
            display,
            must_quote: vec![],
            effects: Vec::new(),
        })
    }

    async fn call(&self, ctx: &ToolContext, args: Value) -> Result<ToolOutput, ToolError> {
        let failed = |e: BookingError| ToolError::Failed(e.to_string());
        let booking_id = match self.target(ctx, args).await? {
            Target::Booking(id) => id,
            Target::Choose(output) => return Ok(output),
        };
        let outcome = cancel(&self.store, &booking_id, ctx.now)
            .await
            .map_err(failed)?
            .ok_or_else(|| {
                ToolError::NotFound(format!("予約番号 {booking_id} のご予約は見つかりません"))
            })?;
        Ok(match outcome {
            CancelOutcome::Cancelled {
                booking,
                reminders_cancelled,
            } => {
                let label = slot_label(booking.slot_start);
                let mut data = booking_summary(&booking);
                data["cancelled"] = json!(true);
                let reminders = if reminders_cancelled > 0 {
                    "予定していたご案内の送信も停止しました。"
                } else {
                    ""
                };
                ToolOutput {
                    display: format!(
                        "{label}〜のご予約（予約番号 {}）をキャンセルしました。{reminders}",
                        booking.id
                    ),
                    data,
                    must_quote: vec![label],
                    effects: vec![ToolEffect::BookingCancelled {
                        booking_id: booking.id.clone(),
                    }],
                }
            }
            CancelOutcome::AlreadyCancelled(booking) => {
                let mut data = booking_summary(&booking);
                data["cancelled"] = json!(false);
                data["reason"] = json!("already_cancelled");
                ToolOutput {
                    display: format!(
                        "予約番号 {} のご予約はすでにキャンセルされています。",
                        booking.id
                    ),
                    data,
                    must_quote: vec![],
                    effects: Vec::new(),
                }
            }
            CancelOutcome::Started(booking) => {
                let mut data = booking_summary(&booking);
                data["cancelled"] = json!(false);
                data["reason"] = json!("started");
                ToolOutput {
                    display: "開始時刻を過ぎたご予約はこちらではキャンセルできません。担当者がご対応しますので、状況をお知らせください。".into(),
                    data,
                    must_quote: vec![],
                    effects: Vec::new(),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(s).unwrap()
    }

    #[test]
    fn reminder_times() {
        let start = at("2026-11-26T19:00:00+09:00");
        assert_eq!(
            ReminderKind::D3.due_at(start),
            at("2026-11-23T10:00:00+09:00")
        );
        assert_eq!(
            ReminderKind::D1.due_at(start),
            at("2026-11-25T10:00:00+09:00")
        );
        assert_eq!(
            ReminderKind::D0.due_at(start),
            at("2026-11-26T18:00:00+09:00")
        );
    }

    #[test]
    fn slot_starts_in_several_spellings() {
        let want = at("2026-11-23T19:00:00+09:00");
        for s in [
            "2026-11-23T19:00:00+09:00",
            "2026-11-23T10:00:00Z",
            "2026-11-23T19:00",
            "2026-11-23 19:00",
            "2026-11-23T19:00:00",
        ] {
            assert_eq!(parse_slot_start(s), Some(want), "{s}");
        }
        assert_eq!(parse_slot_start("11月23日 19時"), None);
    }

    #[test]
    fn ids_are_prefixed_and_distinct() {
        let a = new_id("BK");
        assert!(a.starts_with("BK-") && a.len() == 15);
        assert_ne!(a, new_id("BK"));
    }
}
