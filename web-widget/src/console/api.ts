// The console's HTTP API client (same origin; `Authorization: Bearer <manager token>`).

import type { ConversationStatus, ServerFrame } from "../shared/frames";

export interface Escalation {
  conversation_id: string;
  customer_id: string | null;
  status: ConversationStatus;
  reason: string | null;
  detail?: string | null;
  assigned_to?: string | null;
  escalated_at: string | number | null;
  last_message: string | null;
}

export interface AtRiskAccount {
  customer_id: string;
  name: string;
  plan: string;
  total: number;
  status: string;
  reasons: string[];
  action: string;
}

/** A proactive-outreach draft to an important account, waiting for a person's decision. */
export interface OutreachApproval {
  send_id: string;
  customer_id: string;
  trigger: string;
  variant: string;
  message: string;
  created_at: string | number | null;
}

/** `GET /api/insights` (kizuna-insights' InsightReport). */
export interface InsightReport {
  from: string;
  to: string;
  customer_messages: number;
  topics: {
    model: string | null;
    clustered: number;
    embedded_now: number;
    silhouette: number | null;
    topics: { count: number; share: number; representative: string; examples: string[] }[];
  };
  escalations: {
    total: number;
    by_reason: { reason: string; count: number }[];
    by_day: { period: string; total: number; reasons: Record<string, number> }[];
    by_week: { period: string; total: number; reasons: Record<string, number> }[];
  };
  sentiment: {
    date: string;
    messages: number;
    anger: number;
    anxious: number;
    neutral: number;
    positive: number;
    negative_share: number | null;
    mean: number | null;
  }[];
  unanswered: {
    count: number;
    representative: string;
    examples: string[];
    best_score: number | null;
    signals: string[];
    last_asked: string;
  }[];
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export class ConsoleApi {
  constructor(private readonly token: string) {}

  private async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const headers: Record<string, string> = { Authorization: `Bearer ${this.token}` };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
    if (!response.ok) {
      let message = response.statusText;
      try {
        // {"error": {"code", "message"}}
        const data = (await response.json()) as { error?: { message?: string } | string; message?: string };
        message = (typeof data.error === "object" ? data.error.message : data.error) ?? data.message ?? message;
      } catch {
        // Not JSON: keep the status text.
      }
      throw new ApiError(response.status, message);
    }
    return (await response.json()) as T;
  }

  escalations(): Promise<{ conversations: Escalation[] }> {
    return this.request("GET", "/api/escalations");
  }

  frames(conversationId: string, after: number): Promise<{ frames: ServerFrame[] }> {
    return this.request("GET", `/api/conversations/${encodeURIComponent(conversationId)}/frames?after=${after}`);
  }

  takeover(conversationId: string): Promise<{ status: ConversationStatus }> {
    return this.request("POST", `/api/conversations/${encodeURIComponent(conversationId)}/takeover`);
  }

  reply(conversationId: string, text: string): Promise<{ seq: number }> {
    return this.request("POST", `/api/conversations/${encodeURIComponent(conversationId)}/reply`, { text });
  }

  handback(conversationId: string): Promise<{ status: ConversationStatus }> {
    return this.request("POST", `/api/conversations/${encodeURIComponent(conversationId)}/handback`);
  }

  close(conversationId: string): Promise<{ status: ConversationStatus }> {
    return this.request("POST", `/api/conversations/${encodeURIComponent(conversationId)}/close`);
  }

  atRisk(filters: { status?: string; plan?: string; renewal_within_days?: string }): Promise<{ accounts: AtRiskAccount[] }> {
    const query = new URLSearchParams();
    for (const [key, value] of Object.entries(filters)) if (value) query.set(key, value);
    const suffix = query.toString();
    return this.request("GET", `/api/accounts/at-risk${suffix ? `?${suffix}` : ""}`);
  }

  insights(days: number): Promise<InsightReport> {
    return this.request("GET", `/api/insights?days=${encodeURIComponent(String(days))}`);
  }

  approvals(): Promise<{ approvals: OutreachApproval[] }> {
    return this.request("GET", "/api/outreach/approvals");
  }

  /** `409` when it is no longer waiting (someone else approved or rejected it). */
  approve(sendId: string): Promise<{ status: "delivered"; live: boolean }> {
    return this.request("POST", `/api/outreach/approvals/${encodeURIComponent(sendId)}/approve`);
  }

  /** `409` when it is no longer waiting. */
  reject(sendId: string): Promise<{ status: "rejected" }> {
    return this.request("POST", `/api/outreach/approvals/${encodeURIComponent(sendId)}/reject`);
  }
}
