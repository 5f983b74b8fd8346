// The conversation as a list of entries, built from durable and transient frames. Shared by the
// widget (live websocket) and the operator console (polled frames). Every frame is applied at
// most once: durable frames by `seq`, replies and CSM messages also by `message_id`, user
// messages by their client id.

import type {
  AckFrame,
  ConversationStatus,
  DeltaFrame,
  QuickReply,
  ReplyFrame,
  ServerFrame,
  Source,
  ToolCall,
} from "./frames";

export type EntryKind = "user" | "bot" | "human" | "proactive" | "status";

/** queued: waiting for a connection; sending: sent, no ack yet; sent: stored by the server. */
export type UserState = "queued" | "sending" | "sent" | "failed";

export interface Entry {
  key: string;
  kind: EntryKind;
  /** Durable position; entries without one (streaming replies, unacked messages) come last. */
  seq?: number;
  /** Creation order, for entries without `seq`. */
  order: number;
  /** null when the text is not known here (a message sent from another device). */
  text: string | null;
  clientId?: string;
  userState?: UserState;
  messageId?: string;
  streaming?: boolean;
  lastIndex?: number;
  sources?: Source[];
  toolCalls?: ToolCall[];
  quickReplies?: QuickReply[];
  agentName?: string;
  status?: ConversationStatus;
  reason?: string;
}

export interface Applied {
  /** Keys of entries created or changed. */
  changed: string[];
  /** A new message from the other side (bot reply, CSM, proactive): counts as unread. */
  incoming: Entry | null;
}

const NOTHING: Applied = { changed: [], incoming: null };

export class Transcript {
  private entries = new Map<string, Entry>();
  private messageIds = new Set<string>();
  private counter = 0;
  /** Highest durable seq applied. */
  lastSeq = 0;
  status: ConversationStatus = "bot";
  /** Name of the CSM who last wrote, for the banner. */
  agentName: string | null = null;
  /** The tool the agent is running right now, for the typing indicator. */
  activeTool: string | null = null;
  /** Where the unanswered message waits for the model (a `queue` frame); null once it runs. */
  queued: { position: number; waitSecs: number } | null = null;
  /** Client ids of stored user messages the bot has yet to answer. */
  private unanswered = new Set<string>();

  /** Looks up the text of a message this browser sent, for acks replayed without text. */
  constructor(private readonly textFor: (clientId: string) => string | undefined = () => undefined) {}

  reset(): void {
    this.entries.clear();
    this.messageIds.clear();
    this.unanswered.clear();
    this.lastSeq = 0;
    this.status = "bot";
    this.agentName = null;
    this.activeTool = null;
    this.queued = null;
  }

  get(key: string): Entry | undefined {
    return this.entries.get(key);
  }

  /** Entries in display order: durable by seq, then streaming replies, then unacked messages. */
  ordered(): Entry[] {
    const group = (e: Entry): number => (e.seq !== undefined ? 0 : e.kind === "user" ? 2 : 1);
    return [...this.entries.values()].sort((a, b) => {
      const ga = group(a);
      const gb = group(b);
      if (ga !== gb) return ga - gb;
      if (ga === 0) return (a.seq as number) - (b.seq as number);
      return a.order - b.order;
    });
  }

  /** True while the bot owes an answer (drives the typing indicator). */
  awaitingReply(): boolean {
    if (this.status !== "bot" || this.unanswered.size === 0) return false;
    for (const e of this.entries.values()) {
      if (e.kind === "bot" && e.streaming && e.text) return false;
    }
    return true;
  }

  /** A message typed here, shown before the server has it. */
  addLocal(clientId: string, text: string, state: UserState): Entry {
    const key = userKey(clientId);
    const existing = this.entries.get(key);
    if (existing) return existing;
    const entry: Entry = { key, kind: "user", order: this.counter++, text, clientId, userState: state };
    this.entries.set(key, entry);
    return entry;
  }

  setUserState(clientId: string, state: UserState): boolean {
    const entry = this.entries.get(userKey(clientId));
    if (!entry || entry.userState === state || entry.userState === "sent") return false;
    entry.userState = state;
    return true;
  }

  apply(frame: ServerFrame): Applied {
    const seq = (frame as { seq?: unknown }).seq;
    if (typeof seq === "number") {
      if (seq <= this.lastSeq) return NOTHING;
      this.lastSeq = seq;
    }
    switch (frame.type) {
      case "ack":
        return this.applyAck(frame);
      case "delta":
        return this.applyDelta(frame);
      case "tool":
        this.activeTool = frame.status === "started" ? frame.name : null;
        this.queued = null;
        return { changed: [], incoming: null };
      case "queue":
        this.queued = { position: frame.position, waitSecs: frame.expected_wait_secs };
        return { changed: [], incoming: null };
      case "reply":
        return this.applyReply(frame);
      case "status": {
        this.status = frame.status;
        if (frame.agent_name && frame.status === "human") this.agentName = frame.agent_name;
        if (frame.status === "escalated" || frame.status === "human") {
          // People hold the conversation: the bot answers nothing until it is handed back.
          this.unanswered.clear();
          this.activeTool = null;
          this.queued = null;
        }
        const entry = this.add({
          key: `s:${frame.seq}`,
          kind: "status",
          seq: frame.seq,
          text: frame.message ?? null,
          status: frame.status,
          reason: frame.reason,
        });
        return { changed: [entry.key], incoming: null };
      }
      case "human": {
        if (this.seenMessage(frame.message_id)) return NOTHING;
        if (frame.agent_name) this.agentName = frame.agent_name;
        const entry = this.add({
          key: `h:${frame.message_id}`,
          kind: "human",
          seq: frame.seq,
          text: frame.text,
          messageId: frame.message_id,
          agentName: frame.agent_name,
        });
        return { changed: [entry.key], incoming: entry };
      }
      case "proactive": {
        if (this.seenMessage(frame.message_id)) return NOTHING;
        const entry = this.add({
          key: `p:${frame.message_id}`,
          kind: "proactive",
          seq: frame.seq,
          text: frame.text,
          messageId: frame.message_id,
        });
        return { changed: [entry.key], incoming: entry };
      }
      default:
        return NOTHING;
    }
  }

  private applyAck(frame: AckFrame): Applied {
    const key = userKey(frame.id);
    let entry = this.entries.get(key);
    if (frame.duplicate && frame.status === "answered") this.unanswered.delete(frame.id);
    if (!entry) {
      if (frame.seq === undefined) return NOTHING;
      entry = this.add({
        key,
        kind: "user",
        text: frame.text ?? this.textFor(frame.id) ?? null,
        clientId: frame.id,
      });
    }
    entry.userState = "sent";
    entry.messageId = frame.message_id;
    if (frame.seq !== undefined) {
      entry.seq = frame.seq;
      // A closed conversation reopens with the bot on a new message; held ones stay silent.
      if (this.status === "bot" || this.status === "closed") this.unanswered.add(frame.id);
    }
    if (entry.text === null && frame.text) entry.text = frame.text;
    return { changed: [key], incoming: null };
  }

  private applyDelta(frame: DeltaFrame): Applied {
    this.queued = null;
    const key = botKey(frame.reply_to);
    let entry = this.entries.get(key);
    if (entry && entry.seq !== undefined) return NOTHING; // the final reply is already here
    if (!entry) {
      entry = this.add({ key, kind: "bot", text: "", streaming: true, lastIndex: -1 });
    }
    if (frame.replace) {
      // Resumed mid-reply: the whole text so far; later deltas continue after it.
      entry.text = frame.text;
      entry.lastIndex = -1;
    } else {
      if (frame.index <= (entry.lastIndex ?? -1)) return NOTHING;
      entry.text = (entry.text ?? "") + frame.text;
      entry.lastIndex = frame.index;
    }
    return { changed: [key], incoming: null };
  }

  private applyReply(frame: ReplyFrame): Applied {
    if (this.seenMessage(frame.message_id)) return NOTHING;
    this.unanswered.delete(frame.reply_to);
    this.activeTool = null;
    this.queued = null;
    let key = botKey(frame.reply_to || frame.message_id);
    let entry = this.entries.get(key);
    if (entry && entry.seq !== undefined) {
      // A second reply to the same message (e.g. a holding message): its own entry.
      key = botKey(frame.message_id);
      entry = undefined;
    }
    if (!entry) entry = this.add({ key, kind: "bot", text: "" });
    entry.seq = frame.seq;
    entry.text = frame.text;
    entry.streaming = false;
    entry.messageId = frame.message_id;
    entry.sources = frame.sources ?? [];
    entry.toolCalls = frame.tool_calls ?? [];
    entry.quickReplies = frame.quick_replies ?? [];
    const changed = [key];
    // An escalation's status frame and holding reply carry the same text: show it once.
    const status = this.entries.get(`s:${frame.seq - 1}`);
    if (status && status.text === frame.text) {
      status.text = null;
      changed.push(status.key);
    }
    return { changed, incoming: entry };
  }

  private seenMessage(messageId: string | undefined): boolean {
    if (!messageId) return false;
    if (this.messageIds.has(messageId)) return true;
    this.messageIds.add(messageId);
    return false;
  }

  private add(partial: Omit<Entry, "order">): Entry {
    const entry: Entry = { ...partial, order: this.counter++ };
    this.entries.set(entry.key, entry);
    return entry;
  }
}

function userKey(clientId: string): string {
  return `u:${clientId}`;
}

function botKey(replyTo: string): string {
  return `b:${replyTo}`;
}
