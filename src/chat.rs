//! `kizuna chat`: a terminal client. Reads one message per line from stdin, streams the
//! reply, and prints the tools the agent used. Works interactively and in pipes.

use std::io::Write;

use anyhow::{bail, Context};
use futures::{SinkExt, StreamExt};
use kizuna_protocol::{ClientFrame, ServerFrame};
use serde_json::Value;
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
    send(
        &mut ws,
        &ClientFrame::Hello {
            token: args.token.clone(),
            conversation_id: args.conversation.clone(),
            last_seq: None,
        },
    )
    .await?;
    match next_frame(&mut ws).await? {
        ServerFrame::Welcome {
            conversation_id,
            role,
            ..
        } => eprintln!("conversation {conversation_id} (role {})", role.as_str()),
        other => bail!("server refused the conversation: {}", other.to_json()),
    }

    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        let id = uuid::Uuid::new_v4().to_string();
        send(
            &mut ws,
            &ClientFrame::Message {
                id: id.clone(),
                text: text.to_string(),
            },
        )
        .await?;
        loop {
            match next_frame(&mut ws).await? {
                ServerFrame::Delta { reply_to, text, .. } if reply_to == id => {
                    print!("{text}");
                    std::io::stdout().flush()?;
                }
                ServerFrame::Queue {
                    reply_to,
                    position,
                    expected_wait_secs,
                } if reply_to == id => {
                    eprintln!("[queue] position {position}, about {expected_wait_secs} s");
                }
                ServerFrame::Reply(reply) if reply.reply_to == id => {
                    println!("\n---\n{}", reply.text);
                    for call in &reply.tool_calls {
                        println!("[tool] {} {} ok={}", call.name, call.arguments, call.ok);
                    }
                    break;
                }
                ServerFrame::Error {
                    code,
                    message,
                    id: error_id,
                    ..
                } => {
                    eprintln!("error: {} {message}", code.as_str());
                    if error_id.as_deref() == Some(id.as_str()) {
                        break;
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
}

async fn send<S>(ws: &mut S, frame: &ClientFrame) -> anyhow::Result<()>
where
    S: futures::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
{
    ws.send(Message::Text(serde_json::to_string(frame)?.into()))
        .await?;
    Ok(())
}

/// The next frame the server sent (frames of kinds this client does not know are skipped).
async fn next_frame<S>(ws: &mut S) -> anyhow::Result<ServerFrame>
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let value = next_json(ws).await?;
        if let Ok(frame) = serde_json::from_value::<ServerFrame>(value) {
            return Ok(frame);
        }
    }
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
