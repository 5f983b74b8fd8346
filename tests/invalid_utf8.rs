mod common;
use common::*;
use futures::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// Invalid UTF-8 inside a *text* frame violates RFC 6455 (§8.1: the endpoint must fail the
/// connection); the websocket layer drops that connection. The server and every other
/// connection are unaffected. (Binary frames carrying invalid UTF-8 get an `invalid_utf8`
/// error frame and stay open: see tests/server.rs.)
#[tokio::test]
async fn invalid_utf8_text_frame_fails_only_that_connection() {
    let fixture = ModelFixture::start(std::time::Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &fixture.env()).await;
    let mut bystander = connect(&server.url()).await;
    hello(&mut bystander, json!({})).await;

    let mut ws = connect(&server.url()).await;
    hello(&mut ws, json!({})).await;
    // SAFETY: deliberately invalid, to test the server.
    let bad = unsafe { Utf8Bytes::from_bytes_unchecked(vec![0x7b, 0xff, 0x7d].into()) };
    ws.send(Message::Text(bad)).await.unwrap();
    let next = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        futures::StreamExt::next(&mut ws),
    )
    .await
    .unwrap();
    assert!(
        !matches!(next, Some(Ok(Message::Text(_)))),
        "the offending connection is failed: {next:?}"
    );

    send(&mut bystander, message_frame("still", "こんにちは")).await;
    let frames = recv_until(&mut bystander, "reply", Some("still"), 30).await;
    assert_eq!(frames.last().unwrap()["type"], "reply");
    let (status, _) = http_get(&server.addr, "/healthz").await.unwrap();
    assert_eq!(status, 200);
}
