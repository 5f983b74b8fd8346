// What survives reloads and navigation, in localStorage under one key per identity and server.
// Storage can be unavailable (private modes, blocked cookies): the widget then works for the
// life of the page.

export interface QueuedMessage {
  id: string;
  text: string;
}

export interface SavedState {
  conversationId: string | null;
  /** Highest seq received. */
  lastSeq: number;
  /** Highest seq the visitor has seen with the panel open (unread badge). */
  seenSeq: number;
  /** Messages not yet acknowledged by the server, resent with the same id. */
  outbox: QueuedMessage[];
  /** Texts of messages sent from here, by client id: acks replay without text. */
  texts: Record<string, string>;
}

const MAX_TEXTS = 200;

function empty(): SavedState {
  return { conversationId: null, lastSeq: 0, seenSeq: 0, outbox: [], texts: {} };
}

export class SavedConversation {
  state: SavedState;

  constructor(private readonly key: string) {
    this.state = this.load();
  }

  private load(): SavedState {
    try {
      const raw = window.localStorage.getItem(this.key);
      if (!raw) return empty();
      const parsed = JSON.parse(raw) as Partial<SavedState>;
      return {
        conversationId: typeof parsed.conversationId === "string" ? parsed.conversationId : null,
        lastSeq: Number(parsed.lastSeq) || 0,
        seenSeq: Number(parsed.seenSeq) || 0,
        outbox: Array.isArray(parsed.outbox)
          ? parsed.outbox.filter((m) => m && typeof m.id === "string" && typeof m.text === "string")
          : [],
        texts: parsed.texts && typeof parsed.texts === "object" ? parsed.texts : {},
      };
    } catch {
      return empty();
    }
  }

  save(): void {
    const ids = Object.keys(this.state.texts);
    if (ids.length > MAX_TEXTS) {
      // Insertion order is kept by object keys: drop the oldest.
      for (const id of ids.slice(0, ids.length - MAX_TEXTS)) delete this.state.texts[id];
    }
    try {
      window.localStorage.setItem(this.key, JSON.stringify(this.state));
    } catch {
      // Full or unavailable: keep going in memory.
    }
  }

  /** Forgets the conversation (a new one starts), keeping nothing of the old one. */
  clear(): void {
    this.state = empty();
    this.save();
  }
}

/** Per-tab flag: keeps the panel open across page navigation. */
export function sessionFlag(key: string): { get(): boolean; set(value: boolean): void } {
  return {
    get() {
      try {
        return window.sessionStorage.getItem(key) === "1";
      } catch {
        return false;
      }
    },
    set(value: boolean) {
      try {
        if (value) window.sessionStorage.setItem(key, "1");
        else window.sessionStorage.removeItem(key);
      } catch {
        // Unavailable: the panel simply starts closed on the next page.
      }
    },
  };
}
