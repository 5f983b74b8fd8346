// The widget's side of docs/protocol.md: hello/resume, the outbox of unacknowledged messages,
// reconnects with exponential backoff and jitter, and a heartbeat that notices dead sockets.

import { parseFrame, type ClientFrame, type HelloFrame, type ServerFrame } from "../shared/frames";
import { Transcript, type Entry } from "../shared/transcript";
import type { SavedConversation } from "./storage";

export type ConnectionState = "connecting" | "online" | "offline" | "unauthorized";

export interface ClientEvents {
  /** Entries with these keys were created or changed (possibly none: typing state changed). */
  changed(keys: string[]): void;
  /** A new message from the other side. */
  incoming(entry: Entry): void;
  /** The transcript was cleared (new conversation). */
  reset(): void;
  connection(state: ConnectionState): void;
}

const BACKOFF_BASE_MS = 500;
const BACKOFF_MAX_MS = 15_000;
const HEARTBEAT_MS = 20_000;
const PONG_TIMEOUT_MS = 10_000;
const RETRY_LATER_MS = 3_000;
export const MAX_MESSAGE_CHARS = 2000;

export function newClientId(): string {
  const c = window.crypto;
  if (typeof c.randomUUID === "function") return c.randomUUID();
  // randomUUID needs a secure context; plain-http pages get the same format this way.
  const b = c.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

export class ChatClient {
  readonly transcript: Transcript;
  state: ConnectionState = "connecting";
  private ws: WebSocket | null = null;
  private welcomed = false;
  private attempts = 0;
  private reconnectTimer: number | undefined;
  private heartbeatTimer: number | undefined;
  private pongTimer: number | undefined;
  private lastFrameAt = 0;

  constructor(
    private readonly url: string,
    private readonly token: string,
    private readonly saved: SavedConversation,
    private readonly events: ClientEvents,
  ) {
    this.transcript = new Transcript((id) => saved.state.texts[id]);
    this.restoreOutbox();
  }

  get conversationId(): string | null {
    return this.saved.state.conversationId;
  }

  start(): void {
    window.addEventListener("online", () => this.reconnectNow());
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") this.reconnectNow();
    });
    this.connect();
  }

  /** Queues a message and sends it when connected; returns its client id. */
  send(raw: string): string | null {
    const text = Array.from(raw.trim()).slice(0, MAX_MESSAGE_CHARS).join("");
    if (!text) return null;
    const id = newClientId();
    this.saved.state.texts[id] = text;
    this.saved.state.outbox.push({ id, text });
    this.saved.save();
    const entry = this.transcript.addLocal(id, text, "queued");
    if (this.welcomed) this.transmit(id, text);
    this.events.changed([entry.key]);
    return id;
  }

  /** Forgets this conversation and starts a new one. */
  newConversation(): void {
    this.saved.clear();
    this.transcript.reset();
    this.events.reset();
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.welcomed = false;
      this.sendHello();
    } else {
      this.reconnectNow();
    }
  }

  private restoreOutbox(): void {
    for (const message of this.saved.state.outbox) this.transcript.addLocal(message.id, message.text, "queued");
  }

  private connect(): void {
    window.clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    this.welcomed = false;
    if (this.state !== "offline") this.setState("connecting");
    let ws: WebSocket;
    try {
      ws = new WebSocket(this.url);
    } catch {
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      if (ws === this.ws) this.sendHello();
    };
    ws.onmessage = (event) => {
      if (ws !== this.ws) return;
      this.lastFrameAt = Date.now();
      const frame = parseFrame(event.data);
      if (frame) this.onFrame(frame);
    };
    ws.onclose = () => {
      if (ws === this.ws) this.onDisconnect();
    };
  }

  private sendHello(): void {
    const hello: HelloFrame = { type: "hello" };
    if (this.token) hello.token = this.token;
    const conversationId = this.saved.state.conversationId;
    if (conversationId) {
      hello.conversation_id = conversationId;
      // A fresh page has an empty transcript: 0 replays the whole history to rebuild it.
      hello.last_seq = this.transcript.lastSeq;
    }
    this.raw(hello);
  }

  private raw(frame: ClientFrame): void {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(frame));
  }

  private transmit(id: string, text: string): void {
    this.raw({ type: "message", id, text });
    if (this.transcript.setUserState(id, "sending")) this.events.changed([`u:${id}`]);
  }

  private onFrame(frame: ServerFrame): void {
    switch (frame.type) {
      case "welcome":
        return this.onWelcome(frame.conversation_id, frame.last_seq);
      case "pong":
        return;
      case "error":
        return this.onError(frame.code, frame.id);
      case "ack":
        this.dropFromOutbox(frame.id);
        break;
      default:
        break;
    }
    const before = this.transcript.lastSeq;
    const applied = this.transcript.apply(frame);
    if (this.transcript.lastSeq !== before) {
      this.saved.state.lastSeq = this.transcript.lastSeq;
      this.saved.save();
    }
    this.events.changed(applied.changed);
    if (applied.incoming) this.events.incoming(applied.incoming);
  }

  private onWelcome(conversationId: string, serverLastSeq: number): void {
    const known = this.saved.state.conversationId;
    if (known === conversationId && serverLastSeq < this.transcript.lastSeq) {
      // The server no longer has what we saw (its data was reset): rebuild from scratch.
      this.transcript.reset();
      this.restoreOutbox();
      this.events.reset();
      this.sendHello();
      return;
    }
    if (known !== conversationId) {
      this.saved.state.conversationId = conversationId;
      this.saved.save();
    }
    this.welcomed = true;
    this.attempts = 0;
    this.setState("online");
    this.startHeartbeat();
    // The replay is written before the server reads our next frame, so acks it holds arrive
    // first; resending the rest with the same ids is safe either way (duplicates are acked).
    for (const message of this.saved.state.outbox) this.transmit(message.id, message.text);
  }

  private onError(code: string, id: string | undefined): void {
    if (code === "unauthorized") {
      this.setState("unauthorized");
      this.ws = null; // the server closes the socket; do not reconnect with the same token
      this.stopHeartbeat();
      return;
    }
    if (code === "forbidden" && !id) {
      // The stored conversation belongs to someone else: start a new one, keep the outbox.
      const outbox = this.saved.state.outbox;
      const texts = this.saved.state.texts;
      this.saved.clear();
      this.saved.state.outbox = outbox;
      this.saved.state.texts = texts;
      this.saved.save();
      this.transcript.reset();
      this.restoreOutbox();
      this.events.reset();
      this.sendHello();
      return;
    }
    if (!id) return;
    // busy: earlier messages of this conversation are still being answered; overloaded: the
    // server is full (docs/security.md). Both mean "the same message later".
    if (
      code === "rate_limited" ||
      code === "unavailable" ||
      code === "not_open" ||
      code === "busy" ||
      code === "overloaded"
    ) {
      window.setTimeout(() => {
        const message = this.saved.state.outbox.find((m) => m.id === id);
        if (message && this.welcomed) this.transmit(message.id, message.text);
      }, RETRY_LATER_MS + Math.random() * RETRY_LATER_MS);
      return;
    }
    // bad_request, forbidden, too_large: resending would fail the same way.
    this.dropFromOutbox(id);
    if (this.transcript.setUserState(id, "failed")) this.events.changed([`u:${id}`]);
  }

  private dropFromOutbox(id: string): void {
    const outbox = this.saved.state.outbox;
    const index = outbox.findIndex((m) => m.id === id);
    if (index >= 0) {
      outbox.splice(index, 1);
      this.saved.save();
    }
  }

  private onDisconnect(): void {
    this.ws = null;
    this.welcomed = false;
    this.stopHeartbeat();
    const changed: string[] = [];
    for (const message of this.saved.state.outbox) {
      if (this.transcript.setUserState(message.id, "queued")) changed.push(`u:${message.id}`);
    }
    if (changed.length) this.events.changed(changed);
    this.setState("offline");
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    if (this.reconnectTimer !== undefined) return;
    // Exponential backoff with jitter (50–100 % of the step), so a restarted server is not
    // hit by every visitor at the same instant.
    const step = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** this.attempts);
    const delay = step * (0.5 + Math.random() * 0.5);
    this.attempts += 1;
    this.reconnectTimer = window.setTimeout(() => this.connect(), delay);
  }

  private reconnectNow(): void {
    // Waiting out a backoff step while the browser says the network is back: try now.
    if (this.reconnectTimer !== undefined) this.connect();
  }

  private startHeartbeat(): void {
    this.stopHeartbeat();
    this.heartbeatTimer = window.setInterval(() => {
      const sentAt = Date.now();
      this.raw({ type: "ping" });
      window.clearTimeout(this.pongTimer);
      this.pongTimer = window.setTimeout(() => {
        if (this.lastFrameAt < sentAt) this.dropSocket();
      }, PONG_TIMEOUT_MS);
    }, HEARTBEAT_MS);
  }

  private stopHeartbeat(): void {
    window.clearInterval(this.heartbeatTimer);
    window.clearTimeout(this.pongTimer);
  }

  /** A socket that stopped answering: its close event may take minutes, so stop waiting. */
  private dropSocket(): void {
    const ws = this.ws;
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onclose = null;
    try {
      ws.close();
    } catch {
      // Already closing.
    }
    this.onDisconnect();
  }

  private setState(state: ConnectionState): void {
    if (this.state === state) return;
    this.state = state;
    this.events.connection(state);
  }
}
