//! `kizuna bench --replicas N --database-url postgres://…`: N `kizuna serve` children on one
//! PostgreSQL (docs/deployment.md), with the instant model stand-in of phase 2.
//!
//! 1. Idle memory: `--connections` sockets split evenly over the replicas; RSS growth per
//!    replica / its sockets.
//! 2. Cross-replica delivery: one customer's conversation open on replica A (sending) and on
//!    replica B (watching); per message, the time from sending on A to its `ack` arriving on B
//!    (commit → NOTIFY → B's listener → B's socket), and to the reply arriving on B.
//! 3. Throughput: `--conversations` customers at once, each sending on one replica and
//!    watching on another; answered messages per second over all of them.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::{SinkExt, StreamExt};
use kizuna_agent::identity::{Claims, Role, TokenVerifier};
use kizuna_protocol::{ClientFrame, ServerFrame};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use super::{free_port, rss_kib, start_stub_model, tempfile_dir, wait_healthy, BenchArgs, Ws};

struct Replica {
    child: tokio::process::Child,
    pid: u32,
    url: String,
}

pub async fn run(
    args: &BenchArgs,
    database: &str,
) -> anyhow::Result<serde_json::Map<String, Value>> {
    let stub = start_stub_model().await?;
    let dir = tempfile_dir()?;
    let secret = format!("bench-{}-{}", uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let signer = TokenVerifier::new(secret.clone()).context("token secret")?;
    let per_replica = args.connections.div_ceil(args.replicas);
    let mut replicas = Vec::new();
    for n in 0..args.replicas {
        let port = free_port()?;
        let config = dir.join(format!("replica-{n}.toml"));
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\n[llm]\nbackend = \"openai\"\nopenai_base_url = \"http://{stub}/v1\"\nopenai_model = \"stub\"\n[limits]\nconnections_per_ip = {}\nconnections_per_address = {}\nmessages_per_minute_per_ip = 100000000\nmessages_per_minute_per_connection = 1000000\nmax_queued_turns = 100000\n",
                dir.join(format!("data-{n}")).display(),
                per_replica + 4 * args.conversations + 100,
                per_replica + 4 * args.conversations + 100,
            ),
        )?;
        let child = tokio::process::Command::new(std::env::current_exe()?)
            .args([
                "--config",
                config.to_str().context("temp path is not UTF-8")?,
                "serve",
            ])
            .env("DATABASE_URL", database)
            .env("KIZUNA_TOKEN_SECRET", &secret)
            .env("KIZUNA_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start kizuna serve")?;
        let pid = child.id().context("child has no pid")?;
        let base = format!("127.0.0.1:{port}");
        wait_healthy(&base).await?;
        replicas.push(Replica {
            child,
            pid,
            url: format!("ws://{base}/ws"),
        });
    }
    eprintln!("[bench] {} replicas up on one PostgreSQL", replicas.len());
    let mut report = serde_json::Map::new();
    report.insert("replicas".into(), json!(replicas.len()));

    // 1. Idle memory per socket, split over the replicas.
    let warm: Vec<Ws> =
        futures::future::try_join_all(replicas.iter().map(|r| open(&r.url, None, None))).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before: Vec<u64> = replicas
        .iter()
        .map(|r| rss_kib(r.pid))
        .collect::<Result<_, _>>()?;
    let started = Instant::now();
    let mut sockets = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        let replica = &replicas[i % replicas.len()];
        sockets.push(
            open(&replica.url, None, None)
                .await
                .with_context(|| format!("connection {i}"))?,
        );
    }
    let open_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after: Vec<u64> = replicas
        .iter()
        .map(|r| rss_kib(r.pid))
        .collect::<Result<_, _>>()?;
    let grown: u64 = after
        .iter()
        .zip(&before)
        .map(|(a, b)| a.saturating_sub(*b))
        .sum();
    report.insert("idle_connections".into(), json!(args.connections));
    report.insert(
        "idle_rss_after_mib_per_replica".into(),
        json!(after
            .iter()
            .map(|k| (*k as f64 / 1024.0).round())
            .collect::<Vec<_>>()),
    );
    report.insert(
        "idle_bytes_per_connection".into(),
        json!((grown as f64 * 1024.0 / args.connections as f64).round()),
    );
    report.insert("connect_seconds".into(), json!(open_secs));
    drop(sockets);
    drop(warm);

    // 2. Cross-replica delivery latency, one message at a time.
    let (a, b) = (&replicas[0].url, &replicas[1 % replicas.len()].url);
    let token = customer_token(&signer, "BENCH-LATENCY");
    let mut sender = open(a, Some(&token), None).await?;
    let conversation = opened_conversation(&mut sender).await?;
    let mut watcher = open(b, Some(&token), Some(&conversation)).await?;
    let mut to_ack = Vec::with_capacity(args.turns);
    let mut to_reply = Vec::with_capacity(args.turns);
    for i in 0..args.turns {
        let id = format!("lat-{i}");
        let sent = Instant::now();
        send(&mut sender, &id, "こんにちは").await?;
        let mut acked = None;
        loop {
            match next(&mut watcher).await? {
                ServerFrame::Ack {
                    id: ack_id,
                    seq: Some(_),
                    ..
                } if ack_id == id => {
                    acked = Some(sent.elapsed());
                }
                ServerFrame::Reply(reply) if reply.reply_to == id => {
                    to_reply.push(sent.elapsed());
                    break;
                }
                _ => {}
            }
        }
        to_ack.push(acked.context("the ack did not reach the other replica")?);
        // The sender's own frames are not read in this phase; drain them.
        while let Ok(Some(_)) = tokio::time::timeout(Duration::ZERO, sender.next()).await {}
    }
    report.insert("delivery_messages".into(), json!(args.turns));
    report.insert(
        "cross_replica_ack_p50_ms".into(),
        json!(percentile_ms(&mut to_ack, 0.50)),
    );
    report.insert(
        "cross_replica_ack_p99_ms".into(),
        json!(percentile_ms(&mut to_ack, 0.99)),
    );
    report.insert(
        "cross_replica_reply_p50_ms".into(),
        json!(percentile_ms(&mut to_reply, 0.50)),
    );
    report.insert(
        "cross_replica_reply_p99_ms".into(),
        json!(percentile_ms(&mut to_reply, 0.99)),
    );
    drop(sender);
    drop(watcher);

    // 3. Throughput: many conversations at once, each sending on one replica and watching
    // on the next.
    let per_conversation = (args.turns / args.conversations.max(1)).max(5);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..args.conversations {
        let a = replicas[c % replicas.len()].url.clone();
        let b = replicas[(c + 1) % replicas.len()].url.clone();
        let token = customer_token(&signer, &format!("BENCH-{c}"));
        tasks.push(tokio::spawn(async move {
            let mut sender = open(&a, Some(&token), None).await?;
            let conversation = opened_conversation(&mut sender).await?;
            let mut watcher = open(&b, Some(&token), Some(&conversation)).await?;
            for i in 0..per_conversation {
                let id = format!("tp-{c}-{i}");
                send(&mut sender, &id, "こんにちは").await?;
                loop {
                    if let ServerFrame::Reply(reply) = next(&mut watcher).await? {
                        if reply.reply_to == id {
                            break;
                        }
                    }
                }
                while let Ok(Some(_)) = tokio::time::timeout(Duration::ZERO, sender.next()).await {}
            }
            anyhow::Ok(per_conversation)
        }));
    }
    let mut answered = 0;
    for task in tasks {
        answered += task.await.context("a conversation task panicked")??;
    }
    let secs = started.elapsed().as_secs_f64();
    report.insert("throughput_conversations".into(), json!(args.conversations));
    report.insert("throughput_messages".into(), json!(answered));
    report.insert(
        "answered_messages_per_second".into(),
        json!((answered as f64 / secs * 10.0).round() / 10.0),
    );

    for mut replica in replicas {
        replica.child.kill().await.ok();
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(report)
}

fn customer_token(signer: &TokenVerifier, customer: &str) -> String {
    signer.sign(&Claims {
        role: Role::Customer,
        sub: customer.to_string(),
        name: None,
        exp: chrono::Utc::now().timestamp() + 3600,
    })
}

async fn open(url: &str, token: Option<&str>, conversation: Option<&str>) -> anyhow::Result<Ws> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
    let hello = ClientFrame::Hello {
        token: token.map(str::to_string),
        conversation_id: conversation.map(str::to_string),
        last_seq: None,
    };
    ws.send(Message::Text(serde_json::to_string(&hello)?.into()))
        .await?;
    Ok(ws)
}

/// Reads the `welcome` of a socket just opened; returns its conversation.
async fn opened_conversation(ws: &mut Ws) -> anyhow::Result<String> {
    loop {
        if let ServerFrame::Welcome {
            conversation_id, ..
        } = next(ws).await?
        {
            return Ok(conversation_id);
        }
    }
}

async fn send(ws: &mut Ws, id: &str, text: &str) -> anyhow::Result<()> {
    let frame = ClientFrame::Message {
        id: id.to_string(),
        text: text.to_string(),
    };
    ws.send(Message::Text(serde_json::to_string(&frame)?.into()))
        .await?;
    Ok(())
}

async fn next(ws: &mut Ws) -> anyhow::Result<ServerFrame> {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .context("timed out waiting for a frame")?;
        let Some(Ok(Message::Text(t))) = msg else {
            bail!("connection ended")
        };
        match serde_json::from_str::<ServerFrame>(&t) {
            Ok(ServerFrame::Error { code, message, .. }) => {
                bail!("server error {}: {message}", code.as_str())
            }
            Ok(frame) => return Ok(frame),
            Err(_) => continue,
        }
    }
}

fn percentile_ms(values: &mut [Duration], p: f64) -> f64 {
    values.sort();
    let i = ((values.len() as f64 - 1.0) * p).round() as usize;
    (values[i].as_secs_f64() * 100_000.0).round() / 100.0
}
