//! `kizuna chat`: a terminal client. Reads one message per line from stdin, streams the
//! reply, and prints the tools the agent used. Works interactively and in pipes.

use std::io::Write;

use anyhow::{bail, Context};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::AsyncBufReadExt;
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, clap::Args)]
pub struct ChatArgs {
    /// Websocket URL of the server.
    #[arg(long, env = "KIZUNA_URL", default_value = "ws://127.0.0.1:8080/ws")]
    url: String,
    /// Identity token (see `kizuna token`); anonymous without one.
    #[arg(long, env = "KIZUNA_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Resume this conversation.
    #[arg(long, env = "KIZUNA_CONVERSATION")]
    conversation: Option<String>,
}

pub async fn run(args: ChatArgs) -> anyhow::Result<()> {
    let (mut ws, _) = tokio_tungstenite::connect_async(args.url.as_str())
        .await
        .with_context(|| format!("cannot connect to {}", args.url))?;
    let mut hello = json!({"type": "hello"});
    if let Some(t) = &args.token {
        hello["token"] = json!(t);
    }
    if let Some(c) = &args.conversation {
        hello["conversation_id"] = json!(c);
    }
    ws.send(Message::Text(hello.to_string().into())).await?;
    let welcome = next_json(&mut ws).await?;
    if welcome["type"] != "welcome" {
        bail!("server refused the conversation: {welcome}");
    }
    eprintln!(
        "conversation {} (role {})",
        welcome["conversation_id"].as_str().unwrap_or("?"),
        welcome["role"]
    );

    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        let id = uuid::Uuid::new_v4().to_string();
        ws.send(Message::Text(
            json!({"type": "message", "id": id, "text": text})
                .to_string()
                .into(),
        ))
        .await?;
        loop {
            let frame = next_json(&mut ws).await?;
            match frame["type"].as_str() {
                Some("delta") if frame["reply_to"] == id.as_str() => {
                    print!("{}", frame["text"].as_str().unwrap_or(""));
                    std::io::stdout().flush()?;
                }
                Some("reply") if frame["reply_to"] == id.as_str() => {
                    println!("\n---\n{}", frame["text"].as_str().unwrap_or(""));
                    for call in frame["tool_calls"].as_array().into_iter().flatten() {
                        println!(
                            "[tool] {} {} ok={}",
                            call["name"].as_str().unwrap_or("?"),
                            call["arguments"],
                            call["ok"]
                        );
                    }
                    break;
                }
                Some("error") => {
                    eprintln!("error: {} {}", frame["code"], frame["message"]);
                    if frame["id"] == id.as_str() {
                        break;
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
}

async fn next_json<S>(ws: &mut S) -> anyhow::Result<Value>
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(serde_json::from_str(&t)?),
            Some(Ok(Message::Close(frame))) => bail!("server closed the connection: {frame:?}"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
            None => bail!("connection closed"),
        }
    }
}
