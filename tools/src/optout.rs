//! A customer's request to stop or resume proactive messages: recognising it in a message
//! and storing it on the customer ([`crate::crm::set_opted_out`]).
//!
//! The recognisers live in the conversation hub (kizuna-agent), which answers 配信停止 in chat
//! and cannot depend on this crate; they are re-exported here for outreach.

pub use kizuna_agent::hub::optout::{is_opt_in_request, is_opt_out_request};

#[cfg(test)]
mod tests {
    use kizuna_store::Store;

    use super::*;
    use crate::crm::{get_customer, set_opted_out};

    #[test]
    fn stop_and_resume_are_told_apart() {
        assert!(is_opt_out_request("配信停止"));
        assert!(!is_opt_in_request("配信停止"));
        assert!(is_opt_in_request("配信再開"));
        assert!(!is_opt_out_request("配信再開"));
        assert!(!is_opt_out_request("予約をお願いします"));
        assert!(!is_opt_in_request("予約をお願いします"));
    }

    #[tokio::test]
    async fn set_opted_out_changes_the_customer_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("c.db").display()
        ))
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO customers (id, kind, name, opted_out, created_at, updated_at)
             VALUES ('C-1', 'b2c', '山田', 0, 1, 1)",
        )
        .execute(store.pool())
        .await
        .unwrap();

        assert!(set_opted_out(&store, "C-1", true).await.unwrap());
        assert!(
            get_customer(&store, "C-1")
                .await
                .unwrap()
                .unwrap()
                .opted_out
        );
        assert!(
            !set_opted_out(&store, "C-1", true).await.unwrap(),
            "already opted out"
        );
        assert!(!set_opted_out(&store, "C-404", true).await.unwrap());
        assert!(set_opted_out(&store, "C-1", false).await.unwrap());
        assert!(
            !get_customer(&store, "C-1")
                .await
                .unwrap()
                .unwrap()
                .opted_out
        );
    }

    #[tokio::test]
    async fn an_opt_out_survives_a_later_import() {
        use crate::crm::{import_customers, Format};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("c.db").display()
        ))
        .await
        .unwrap();
        let file = |opted_out: &str| {
            format!("id,kind,name,opted_out\nC-1,b2c,山田,{opted_out}\nC-2,b2c,佐藤,false\n")
        };
        import_customers(&store, file("false").as_bytes(), Format::Csv)
            .await
            .unwrap();
        // The customer wrote 配信停止 in chat; the CRM export still says false.
        assert!(set_opted_out(&store, "C-1", true).await.unwrap());
        import_customers(&store, file("false").as_bytes(), Format::Csv)
            .await
            .unwrap();
        let opted = |id: &'static str| {
            let store = store.clone();
            async move { get_customer(&store, id).await.unwrap().unwrap().opted_out }
        };
        assert!(opted("C-1").await, "an import must not undo an opt-out");
        assert!(!opted("C-2").await);
        // The CRM can opt a customer out.
        import_customers(
            &store,
            "id,kind,name,opted_out\nC-2,b2c,佐藤,true\n".as_bytes(),
            Format::Csv,
        )
        .await
        .unwrap();
        assert!(opted("C-2").await);
    }
}
