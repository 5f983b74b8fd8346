// Frames of the chat websocket (docs/protocol.md) and the console API, as the client sees them.

export interface Source {
  doc_id?: string;
  title?: string;
  url?: string;
  score?: number;
}

export interface ToolCall {
  id?: string;
  name: string;
  arguments?: unknown;
  ok: boolean;
  result?: unknown;
}

export type ConversationStatus = "bot" | "escalated" | "human" | "closed";

export type Role = "anonymous" | "customer" | "manager";

/** Where a received message stands (on a duplicate `ack`). */
export type MessageStatus = "pending" | "answered" | "held";

export type ErrorCode =
  | "bad_json"
  | "invalid_utf8"
  | "too_large"
  | "unknown_type"
  | "bad_request"
  | "not_open"
  | "unauthorized"
  | "forbidden"
  | "rate_limited"
  | "unavailable"
  | "busy"
  | "overloaded"
  | "not_found"
  | "conflict"
  | "capped";

// Client → server (the Rust side: protocol/src/lib.rs `ClientFrame`).

export interface HelloFrame {
  type: "hello";
  token?: string;
  conversation_id?: string;
  last_seq?: number;
}

export interface MessageFrame {
  type: "message";
  id: string;
  text: string;
}

export interface PingFrame {
  type: "ping";
}

export type ClientFrame = HelloFrame | MessageFrame | PingFrame;

export interface WelcomeFrame {
  type: "welcome";
  conversation_id: string;
  last_seq: number;
  role: Role;
  resumed: boolean;
}

export interface AckFrame {
  type: "ack";
  seq?: number;
  id: string;
  message_id: string;
  duplicate?: boolean;
  status?: MessageStatus;
  /** The user's text, when the server includes it (needed to rebuild history elsewhere). */
  text?: string;
}

export interface DeltaFrame {
  type: "delta";
  reply_to: string;
  index: number;
  text: string;
  replace?: boolean;
}

export interface ToolFrame {
  type: "tool";
  reply_to: string;
  name: string;
  status: "started" | "done" | "failed";
}

/** Where a message waits for the model (admission control); transient. */
export interface QueueFrame {
  type: "queue";
  reply_to: string;
  /** 1 = next. */
  position: number;
  expected_wait_secs: number;
}

/** A button under a reply: `label` is shown, `text` is sent as the customer's message. */
export interface QuickReply {
  label: string;
  text: string;
}

export interface ReplyFrame {
  type: "reply";
  seq: number;
  reply_to: string;
  message_id: string;
  text: string;
  sources?: Source[];
  tool_calls?: ToolCall[];
  fallback?: string | null;
  /** Buttons under the reply (consent to a proposal, a clarifying question's choices). */
  quick_replies?: QuickReply[];
  /** A write (e.g. a booking) proposed in this reply and waiting for the customer's consent. */
  proposal?: { tool: string; summary: string };
  /** A confident FAQ answer sent without the model. */
  direct_answer?: boolean;
  /** On the holding message of an escalation. */
  escalation?: { reason: string };
  /** The outcome of a 配信停止 / 配信再開 request. */
  opt_out?: boolean;
  opt_in?: boolean;
  signed_in?: boolean;
  failed?: boolean;
}

export interface StatusFrame {
  type: "status";
  seq: number;
  status: ConversationStatus;
  reason?: string;
  message?: string;
  /** The CSM who took over or handed back. */
  agent_name?: string;
}

export interface HumanFrame {
  type: "human";
  seq: number;
  message_id: string;
  text: string;
  agent_name?: string;
}

export interface ProactiveFrame {
  type: "proactive";
  seq: number;
  message_id: string;
  text: string;
  campaign_id?: string;
  trigger?: string;
  send_id?: string;
}

export interface ErrorFrame {
  type: "error";
  code: ErrorCode;
  message: string;
  id?: string;
  /** On `overloaded`: when to resend. */
  retry_after_secs?: number;
}

export interface PongFrame {
  type: "pong";
}

export type ServerFrame =
  | WelcomeFrame
  | AckFrame
  | DeltaFrame
  | ToolFrame
  | QueueFrame
  | ReplyFrame
  | StatusFrame
  | HumanFrame
  | ProactiveFrame
  | ErrorFrame
  | PongFrame;

/** Parses one incoming frame; anything that is not an object with a string `type` is dropped. */
export function parseFrame(data: unknown): ServerFrame | null {
  if (typeof data !== "string") return null;
  try {
    const value: unknown = JSON.parse(data);
    if (value && typeof value === "object" && typeof (value as { type?: unknown }).type === "string") {
      return value as ServerFrame;
    }
  } catch {
    // Not JSON: ignore it rather than break the widget.
  }
  return null;
}
