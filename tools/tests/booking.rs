//! Bookings against a real store: no double booking under concurrency, reminders,
//! cancellation, slot rules and who may book.

mod common;

use std::sync::Arc;

use common::{at, ctx, ctx_at};
use kizuna_agent::identity::Identity;
use kizuna_agent::tool::{Tool, ToolEffect, ToolError};
use kizuna_store::Store;
use kizuna_tools::booking::{
    booking_by_id, due_reminders, mark_reminder_sent, reminders_for_booking, ReminderKind,
};
use kizuna_tools::{BookMeasurement, BookingCalendar, CancelBooking, CheckAvailability};
use serde_json::json;
use sqlx::Row;

/// Tuesday 2026-11-24 10:00 JST: three days after [`common::NOW`], inside the horizon.
const SLOT: &str = "2026-11-24T10:00:00+09:00";

fn calendar(capacity: u32) -> BookingCalendar {
    BookingCalendar {
        capacity_per_slot: capacity,
        ..Default::default()
    }
}

async fn active_seats(store: &Store, slot: &str) -> Vec<i64> {
    let rows = sqlx::query(
        "SELECT seat FROM bookings WHERE slot_start = $1 AND status = 'booked' ORDER BY seat",
    )
    .bind(at(slot).timestamp())
    .fetch_all(store.pool())
    .await
    .unwrap();
    rows.iter().map(|r| r.try_get("seat").unwrap()).collect()
}

async fn fifty_callers_one_last_seat(store: &Store) {
    let tool = Arc::new(BookMeasurement::new(store.clone(), calendar(2)).unwrap());
    // Seat 1 is taken; one seat is left.
    let first = tool
        .call(
            &ctx(Identity::customer("C-0")),
            json!({"slot_start": SLOT, "plan": "standard"}),
        )
        .await
        .unwrap();
    assert_eq!(first.data["created"], json!(true));

    let mut tasks = Vec::new();
    for i in 1..=50 {
        let tool = tool.clone();
        tasks.push(tokio::spawn(async move {
            tool.call(
                &ctx(Identity::customer(format!("C-{i}"))),
                json!({"slot_start": SLOT, "plan": "light"}),
            )
            .await
        }));
    }
    let mut created = 0;
    let mut full = 0;
    for task in tasks {
        let out = task.await.unwrap().expect("every call answers");
        if out.data["created"] == json!(true) {
            created += 1;
        } else {
            assert_eq!(out.data["reason"], json!("full"), "{:?}", out.data);
            assert!(out.display.contains("満席"));
            full += 1;
        }
    }
    assert_eq!((created, full), (1, 49));
    assert_eq!(active_seats(store, SLOT).await, [1, 2]);
}
on_both_engines!(last_seat, super::fifty_callers_one_last_seat);

async fn reminders_and_cancellation(store: &Store) {
    let book = BookMeasurement::new(store.clone(), calendar(1)).unwrap();
    let cancel = CancelBooking::new(store.clone());
    let hanako = ctx(Identity::customer("C-1001"));
    // Monday 2026-11-23 10:00: D-3 (11-20 10:00) is already past, D-1 and D-0 are scheduled.
    let slot = "2026-11-23T10:00:00+09:00";
    let out = book
        .call(
            &hanako,
            json!({"slot_start": slot, "plan": "standard", "mediation": true, "notes": "夜間の足音"}),
        )
        .await
        .unwrap();
    assert_eq!(out.must_quote, ["11月23日(月) 10:00", "20,800円"]);
    // The booking is reported as an effect (the hub acts on it, not on the tool's name).
    let booking_id = out.data["booking_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        out.effects,
        [ToolEffect::BookingCreated {
            booking_id: booking_id.clone()
        }],
        "{}",
        out.data
    );
    assert!(
        out.display.contains("11月23日(月) 10:00〜"),
        "{}",
        out.display
    );
    assert!(out.display.contains("スタンダードプラン（12,800円）"));
    assert!(out.display.contains("AI仲裁サービス（8,000円）"));
    assert!(out.display.contains("前日・当日"));
    assert!(!out.display.contains("3日前"));
    let booking_id = out.data["booking_id"].as_str().unwrap().to_string();
    let booking = booking_by_id(store, &booking_id).await.unwrap().unwrap();
    assert_eq!(booking.customer_id, "C-1001");
    assert_eq!(booking.price_jpy, 20_800);
    assert_eq!(booking.notes.as_deref(), Some("夜間の足音"));
    let reminders = reminders_for_booking(store, &booking_id).await.unwrap();
    let kinds: Vec<(ReminderKind, String)> = reminders
        .iter()
        .map(|r| (r.kind, r.due_at.to_rfc3339()))
        .collect();
    assert_eq!(
        kinds,
        [
            (ReminderKind::D1, "2026-11-22T10:00:00+09:00".to_string()),
            (ReminderKind::D0, "2026-11-23T09:00:00+09:00".to_string()),
        ]
    );
    assert!(reminders.iter().all(|r| r.status == "pending"));

    // The same request again returns the same booking instead of taking another seat.
    let again = book
        .call(&hanako, json!({"slot_start": slot, "plan": "standard"}))
        .await
        .unwrap();
    assert_eq!(again.data["created"], json!(false));
    assert_eq!(again.data["booking_id"], json!(booking_id));

    // The slot (capacity 1) is full for everyone else, and availability agrees.
    let other = ctx(Identity::customer("C-1002"));
    let refused = book
        .call(&other, json!({"slot_start": slot, "plan": "light"}))
        .await
        .unwrap();
    assert_eq!(refused.data["reason"], json!("full"));
    let check = CheckAvailability::new(store.clone(), calendar(1)).unwrap();
    let candidates = check
        .call(&other, json!({"preferred_time": "daytime"}))
        .await
        .unwrap();
    assert_ne!(candidates.data["candidates"][0]["start"], json!(slot));

    // Reminders become due, are sent once.
    let due = due_reminders(store, at("2026-11-22T10:00:00+09:00"), 10)
        .await
        .unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].kind, ReminderKind::D1);
    assert_eq!(due[0].kind.title_ja(), "明日測定です");
    assert!(mark_reminder_sent(store, &due[0].id).await.unwrap());
    assert!(!mark_reminder_sent(store, &due[0].id).await.unwrap());

    // Cancelling (without an id: the only upcoming booking) frees the seat and withdraws
    // the reminders still pending.
    let cancelled = cancel.call(&hanako, json!({})).await.unwrap();
    assert_eq!(cancelled.data["cancelled"], json!(true));
    assert_eq!(
        cancelled.effects,
        [ToolEffect::BookingCancelled {
            booking_id: booking_id.clone()
        }]
    );
    assert!(cancelled.display.contains("キャンセルしました"));
    let reminders = reminders_for_booking(store, &booking_id).await.unwrap();
    let statuses: Vec<&str> = reminders.iter().map(|r| r.status.as_str()).collect();
    assert_eq!(statuses, ["sent", "cancelled"]);
    assert!(active_seats(store, slot).await.is_empty());
    let twice = cancel
        .call(&hanako, json!({"booking_id": booking_id}))
        .await
        .unwrap();
    assert_eq!(twice.data["reason"], json!("already_cancelled"));
    let now_free = book
        .call(&other, json!({"slot_start": slot, "plan": "light"}))
        .await
        .unwrap();
    assert_eq!(now_free.data["created"], json!(true));
    assert_eq!(active_seats(store, slot).await, [1]);

    // A booking whose time has come cannot be cancelled here.
    let late = cancel
        .call(
            &ctx_at(Identity::customer("C-1002"), "2026-11-23T10:30:00+09:00"),
            json!({"booking_id": now_free.data["booking_id"]}),
        )
        .await
        .unwrap();
    assert_eq!(late.data["reason"], json!("started"));
}
on_both_engines!(reminders, super::reminders_and_cancellation);

async fn slot_rules_and_callers(store: &Store) {
    let book = BookMeasurement::new(store.clone(), calendar(2)).unwrap();
    let customer = ctx(Identity::customer("C-1"));
    for (slot, why) in [
        ("2026-11-24T10:30:00+09:00", "not a slot time"),
        ("2026-11-29T10:00:00+09:00", "Sunday is closed"),
        ("2026-11-21T19:00:00+09:00", "inside the 24-hour lead time"),
        ("2026-12-07T10:00:00+09:00", "beyond the 14-day horizon"),
        ("2026-11-20T10:00:00+09:00", "in the past"),
    ] {
        let err = book
            .call(&customer, json!({"slot_start": slot, "plan": "light"}))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ToolError::InvalidArguments(_)),
            "{why}: {err}"
        );
    }
    // The last day of the horizon is bookable: 2026-12-05 is a Saturday, 14 days ahead.
    let edge = book
        .call(
            &customer,
            json!({"slot_start": "2026-12-05T21:00:00+09:00", "plan": "premium"}),
        )
        .await
        .unwrap();
    assert_eq!(edge.data["price"], json!("24,800円"));
    assert!(book
        .call(
            &customer,
            json!({"slot_start": "next tuesday", "plan": "light"})
        )
        .await
        .is_err());

    // Anonymous visitors are asked to log in; managers do not book for customers.
    for identity in [Identity::anonymous("visitor"), Identity::manager("M-1")] {
        let err = book
            .call(&ctx(identity), json!({"slot_start": SLOT, "plan": "light"}))
            .await
            .unwrap_err();
        let ToolError::Forbidden(message) = err else {
            panic!("expected Forbidden");
        };
        assert!(message.contains("ログイン"));
    }
    assert!(active_seats(store, SLOT).await.is_empty());
}
on_both_engines!(rules, super::slot_rules_and_callers);
