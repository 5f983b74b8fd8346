// The operator console (/console): escalated conversations, their live transcripts, the CSM's
// reply box and controls, the at-risk accounts list and the queue of proactive-outreach drafts
// waiting for approval. Polls the HTTP API every 2 seconds (approvals less often, see below).

import { h } from "../shared/dom";
import type { ConversationStatus } from "../shared/frames";
import { renderEntry } from "../shared/render";
import { Transcript } from "../shared/transcript";
import { ApiError, ConsoleApi, type AtRiskAccount, type Escalation, type OutreachApproval } from "./api";
import { renderInsights } from "./insights";

const POLL_MS = 2000;
/**
 * Approvals change only when a trigger run drafts new ones (every 15 minutes by default) or
 * another person decides one, so the 2-second cycle re-reads them only every 5 s while their
 * view is open (a colleague's decision shows up quickly) and every 15 s otherwise (the tab's
 * count). A decision made here refreshes at once.
 */
const APPROVALS_POLL_VISIBLE_MS = 5000;
const APPROVALS_POLL_HIDDEN_MS = 15000;
const TOKEN_KEY = "kizuna-console-token";

const STATUS_LABEL: Record<string, string> = {
  bot: "ボット対応中",
  escalated: "対応待ち",
  human: "担当者対応中",
  closed: "終了",
};

const REASON_LABEL: Record<string, string> = {
  legal: "法的な相談",
  negative_sentiment: "強い不満",
  refund_or_cancel: "返金・解約",
  complaint: "苦情",
  unresolved: "未解決",
  customer_request: "担当者の希望",
};

const HEALTH_LABEL: Record<string, string> = { red: "要対応", yellow: "注意", green: "良好" };

const TRIGGER_LABEL: Record<string, string> = {
  health_red: "ヘルススコア赤",
  usage_drop: "利用率低下",
  payment_overdue_7: "支払い遅延7日",
  payment_overdue_14: "支払い遅延14日",
  payment_overdue_21: "支払い遅延21日",
  low_nps: "NPS低評価",
  renewal_90d_at_risk: "更新90日前（要注意）",
  renewal_90d_healthy: "更新90日前（良好）",
  onboarding_first_measurement_pending: "初回測定の後押し",
};

type View = "queue" | "accounts" | "approvals" | "insights";
const VIEWS: readonly View[] = ["queue", "accounts", "approvals", "insights"];

function byId<T extends HTMLElement>(id: string): T {
  const el = document.getElementById(id);
  if (!el) throw new Error(`console.html lacks #${id}`);
  return el as T;
}

function formatTime(value: string | number | null): string {
  if (value === null || value === undefined || value === "") return "";
  const date = typeof value === "number" ? new Date(value < 1e12 ? value * 1000 : value) : new Date(value);
  if (Number.isNaN(date.getTime())) return String(value);
  return date.toLocaleString("ja-JP", { month: "numeric", day: "numeric", hour: "2-digit", minute: "2-digit" });
}

function describeError(error: unknown): string {
  if (error instanceof ApiError) {
    if (error.status === 401) return "トークンが無効か、有効期限が切れています。もう一度ログインしてください。";
    if (error.status === 403) return "マネージャー権限のトークンが必要です。";
    if (error.status === 404) return "見つかりませんでした（サーバーがこの機能に未対応の可能性があります）。";
    if (error.status === 409) return "この操作は今の状態ではできません。先に「対応を引き継ぐ」を押してください。";
    return `サーバーエラー（${error.status}）: ${error.message}`;
  }
  return "サーバーに接続できません。";
}

class Console {
  private api: ConsoleApi | null = null;
  private selected: string | null = null;
  private transcript = new Transcript();
  private transcriptEls = new Map<string, HTMLElement>();
  private queue: Escalation[] = [];
  private view: View = "queue";
  private pollTimer: number | undefined;
  private polling = false;
  /** Cards by send id, kept across refreshes so focus and scroll survive a poll. */
  private approvalCards = new Map<string, HTMLElement>();
  /** Decided here: hidden even if a read started before the decision still lists them. */
  private decided = new Set<string>();
  /** Only the newest approvals read may render (an older one can answer later). */
  private approvalsGeneration = 0;
  private approvalsLoadedAt = 0;

  private readonly login = byId("login");
  private readonly loginForm = byId<HTMLFormElement>("login-form");
  private readonly tokenInput = byId<HTMLTextAreaElement>("token");
  private readonly loginError = byId("login-error");
  private readonly app = byId("app");
  private readonly logout = byId<HTMLButtonElement>("logout");
  private readonly queueList = byId("queue");
  private readonly queueEmpty = byId("queue-empty");
  private readonly queueCount = byId("queue-count");
  private readonly detailEmpty = byId("detail-empty");
  private readonly detailBody = byId("detail-body");
  private readonly detailTitle = byId("detail-title");
  private readonly detailStatus = byId("detail-status");
  private readonly detailError = byId("detail-error");
  private readonly transcriptEl = byId("transcript");
  private readonly replyForm = byId<HTMLFormElement>("reply-form");
  private readonly replyText = byId<HTMLTextAreaElement>("reply-text");
  private readonly takeoverButton = byId<HTMLButtonElement>("btn-takeover");
  private readonly handbackButton = byId<HTMLButtonElement>("btn-handback");
  private readonly closeButton = byId<HTMLButtonElement>("btn-close");
  private readonly accountFilters = byId<HTMLFormElement>("account-filters");
  private readonly accountRows = byId("accounts");
  private readonly accountsMessage = byId("accounts-message");
  private readonly approvalList = byId("approvals");
  private readonly approvalsEmpty = byId("approvals-empty");
  private readonly approvalsCount = byId("approvals-count");
  private readonly approvalsTabCount = byId("approvals-tab-count");
  private readonly approvalsNotice = byId("approvals-notice");
  private readonly approvalsError = byId("approvals-error");
  private readonly insightsDays = byId<HTMLSelectElement>("insights-days");
  private readonly insightsBody = byId("insights");
  private readonly insightsMessage = byId("insights-message");
  /** Only the newest report read may render. */
  private insightsGeneration = 0;

  start(): void {
    this.loginForm.addEventListener("submit", (event) => {
      event.preventDefault();
      void this.signIn(this.tokenInput.value.trim());
    });
    this.logout.addEventListener("click", () => this.signOut());
    document.querySelectorAll<HTMLButtonElement>("[data-view]").forEach((tab) =>
      tab.addEventListener("click", () => this.showView(VIEWS.find((v) => v === tab.dataset.view) ?? "queue")),
    );
    this.takeoverButton.addEventListener("click", () => void this.act("takeover"));
    this.handbackButton.addEventListener("click", () => void this.act("handback"));
    this.closeButton.addEventListener("click", () => void this.act("close"));
    this.replyForm.addEventListener("submit", (event) => {
      event.preventDefault();
      void this.sendReply();
    });
    this.replyText.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && !event.isComposing) {
        event.preventDefault();
        void this.sendReply();
      }
    });
    this.accountFilters.addEventListener("submit", (event) => {
      event.preventDefault();
      void this.loadAccounts();
    });
    this.accountFilters.addEventListener("change", () => void this.loadAccounts());
    this.insightsDays.addEventListener("change", () => void this.loadInsights());

    let saved: string | null = null;
    try {
      saved = window.sessionStorage.getItem(TOKEN_KEY);
    } catch {
      saved = null;
    }
    if (saved) void this.signIn(saved);
  }

  private async signIn(token: string): Promise<void> {
    if (!token) return;
    const api = new ConsoleApi(token);
    this.loginError.textContent = "";
    try {
      this.queue = (await api.escalations()).conversations;
    } catch (error) {
      this.loginError.textContent = describeError(error);
      return;
    }
    this.api = api;
    try {
      window.sessionStorage.setItem(TOKEN_KEY, token);
    } catch {
      // Unavailable: the login lasts until the page is closed.
    }
    this.login.hidden = true;
    this.app.hidden = false;
    this.logout.hidden = false;
    this.tokenInput.value = "";
    this.renderQueue();
    void this.loadApprovals();
    this.schedulePoll();
  }

  private signOut(): void {
    try {
      window.sessionStorage.removeItem(TOKEN_KEY);
    } catch {
      // Nothing stored.
    }
    window.clearTimeout(this.pollTimer);
    this.api = null;
    this.selected = null;
    this.app.hidden = true;
    this.logout.hidden = true;
    this.login.hidden = false;
    this.approvalsGeneration++;
    this.approvalsLoadedAt = 0;
    this.approvalCards.clear();
    this.approvalList.replaceChildren();
    this.approvalsNotice.textContent = "";
    this.approvalsError.textContent = "";
  }

  private showView(view: View): void {
    this.view = view;
    document.querySelectorAll<HTMLButtonElement>("[data-view]").forEach((tab) => {
      tab.classList.toggle("active", tab.dataset.view === view);
      tab.setAttribute("aria-selected", String(tab.dataset.view === view));
    });
    byId("view-queue").hidden = view !== "queue";
    byId("view-accounts").hidden = view !== "accounts";
    byId("view-approvals").hidden = view !== "approvals";
    byId("view-insights").hidden = view !== "insights";
    if (view === "accounts") void this.loadAccounts();
    if (view === "insights") void this.loadInsights();
    if (view === "approvals") void this.loadApprovals();
  }

  // --- お客様の声 ----------------------------------------------------------------------

  /** Read once per visit or period change (not polled: it embeds new messages). */
  private async loadInsights(): Promise<void> {
    if (!this.api) return;
    const generation = ++this.insightsGeneration;
    const days = Number(this.insightsDays.value) || 30;
    this.insightsMessage.textContent = "集計中…";
    try {
      const report = await this.api.insights(days);
      if (generation !== this.insightsGeneration) return;
      renderInsights(this.insightsBody, report);
      this.insightsMessage.textContent = "";
    } catch (error) {
      if (generation !== this.insightsGeneration) return;
      this.insightsMessage.textContent = describeError(error);
    }
  }

  // --- polling -------------------------------------------------------------------------

  private schedulePoll(): void {
    window.clearTimeout(this.pollTimer);
    this.pollTimer = window.setTimeout(() => void this.poll(), POLL_MS);
  }

  private async poll(): Promise<void> {
    if (!this.api || this.polling) return;
    this.polling = true;
    const approvalsEvery = this.view === "approvals" ? APPROVALS_POLL_VISIBLE_MS : APPROVALS_POLL_HIDDEN_MS;
    if (Date.now() - this.approvalsLoadedAt >= approvalsEvery) void this.loadApprovals();
    try {
      if (this.view === "queue") {
        this.queue = (await this.api.escalations()).conversations;
        this.renderQueue();
        await this.pollFrames();
      }
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) {
        this.signOut();
        this.loginError.textContent = describeError(error);
        return;
      }
      this.detailError.textContent = describeError(error);
    } finally {
      this.polling = false;
      if (this.api) this.schedulePoll();
    }
  }

  private async pollFrames(): Promise<void> {
    const id = this.selected;
    if (!this.api || !id) return;
    const { frames } = await this.api.frames(id, this.transcript.lastSeq);
    if (id !== this.selected) return; // another conversation was chosen meanwhile
    const changed: string[] = [];
    for (const frame of frames) changed.push(...this.transcript.apply(frame).changed);
    if (changed.length) this.renderTranscript(changed);
    this.renderDetailHead();
  }

  // --- queue ---------------------------------------------------------------------------

  private renderQueue(): void {
    this.queueList.replaceChildren(
      ...this.queue.map((item) => {
        const li = h(
          "li",
          {
            class: `queue-item${item.conversation_id === this.selected ? " selected" : ""}`,
            "data-conversation-id": item.conversation_id,
            "data-status": item.status,
            tabindex: "0",
            role: "button",
          },
          h(
            "div",
            { class: "queue-top" },
            h("span", { class: `chip chip-${item.status}` }, STATUS_LABEL[item.status] ?? item.status),
            item.reason ? h("span", { class: "chip chip-reason" }, REASON_LABEL[item.reason] ?? item.reason) : null,
            h("span", { class: "queue-time" }, formatTime(item.escalated_at)),
          ),
          h("div", { class: "queue-customer" }, item.customer_id ?? "匿名の訪問者"),
          item.detail ? h("div", { class: "queue-detail" }, item.detail) : null,
          h("div", { class: "queue-last" }, item.last_message ?? ""),
        );
        li.addEventListener("click", () => this.select(item.conversation_id));
        li.addEventListener("keydown", (event) => {
          if (event.key === "Enter" || event.key === " ") this.select(item.conversation_id);
        });
        return li;
      }),
    );
    this.queueEmpty.hidden = this.queue.length > 0;
    this.queueCount.textContent = `（${this.queue.length}件）`;
  }

  private select(conversationId: string): void {
    if (this.selected === conversationId) return;
    this.selected = conversationId;
    this.transcript = new Transcript();
    this.transcriptEls.clear();
    this.transcriptEl.replaceChildren();
    this.detailError.textContent = "";
    this.detailEmpty.hidden = true;
    this.detailBody.hidden = false;
    this.renderQueue();
    this.renderDetailHead();
    void this.pollFrames().catch((error) => (this.detailError.textContent = describeError(error)));
  }

  /** The transcript's latest status frame wins; before one is loaded, the queue's view. */
  private currentStatus(): ConversationStatus {
    if (this.transcript.ordered().some((e) => e.kind === "status")) return this.transcript.status;
    const item = this.queue.find((q) => q.conversation_id === this.selected);
    return item?.status ?? this.transcript.status;
  }

  private renderDetailHead(): void {
    if (!this.selected) return;
    const item = this.queue.find((q) => q.conversation_id === this.selected);
    this.detailTitle.textContent = item?.customer_id ? `顧客 ${item.customer_id}` : "匿名の訪問者";
    const status = this.currentStatus();
    this.detailStatus.replaceChildren(
      h("span", { class: `chip chip-${status}` }, STATUS_LABEL[status] ?? status),
      h("span", { class: "conv-id" }, this.selected),
    );
    this.detailBody.dataset.status = status;
    this.takeoverButton.disabled = status === "human" || status === "closed";
    this.handbackButton.disabled = status === "bot" || status === "closed";
    this.closeButton.disabled = status === "closed";
    this.replyText.disabled = status === "closed";
  }

  private renderTranscript(changed: string[]): void {
    const nearEnd =
      this.transcriptEl.scrollHeight - this.transcriptEl.scrollTop - this.transcriptEl.clientHeight < 80;
    for (const key of changed) {
      const entry = this.transcript.get(key);
      if (!entry) continue;
      const el = renderEntry(entry, { perspective: "operator" });
      this.transcriptEls.get(key)?.replaceWith(el);
      this.transcriptEls.set(key, el);
    }
    for (const entry of this.transcript.ordered()) {
      const el = this.transcriptEls.get(entry.key);
      if (el) this.transcriptEl.append(el);
    }
    if (nearEnd) this.transcriptEl.scrollTop = this.transcriptEl.scrollHeight;
  }

  // --- actions -------------------------------------------------------------------------

  private async act(action: "takeover" | "handback" | "close"): Promise<void> {
    const id = this.selected;
    if (!this.api || !id) return;
    this.detailError.textContent = "";
    try {
      const result = await this.api[action](id);
      const item = this.queue.find((q) => q.conversation_id === id);
      if (item) item.status = result.status;
      this.renderDetailHead();
      await this.pollFrames();
      if (action === "takeover") this.replyText.focus();
    } catch (error) {
      this.detailError.textContent = describeError(error);
    }
  }

  private async sendReply(): Promise<void> {
    const id = this.selected;
    const text = this.replyText.value.trim();
    if (!this.api || !id || !text) return;
    this.detailError.textContent = "";
    try {
      await this.api.reply(id, text);
      this.replyText.value = "";
      await this.pollFrames();
    } catch (error) {
      this.detailError.textContent = describeError(error);
    }
  }

  // --- accounts ------------------------------------------------------------------------

  private async loadAccounts(): Promise<void> {
    if (!this.api) return;
    const form = new FormData(this.accountFilters);
    const value = (name: string) => String(form.get(name) ?? "").trim();
    this.accountsMessage.textContent = "読み込み中…";
    try {
      const { accounts } = await this.api.atRisk({
        status: value("status"),
        plan: value("plan"),
        renewal_within_days: value("renewal_within_days"),
      });
      this.renderAccounts(accounts);
      this.accountsMessage.textContent = accounts.length ? `${accounts.length}件` : "該当するアカウントはありません。";
    } catch (error) {
      this.accountRows.replaceChildren();
      this.accountsMessage.textContent = describeError(error);
    }
  }

  private renderAccounts(accounts: AtRiskAccount[]): void {
    this.accountRows.replaceChildren(
      ...accounts.map((account) =>
        h(
          "tr",
          { "data-customer-id": account.customer_id },
          h("td", null, account.customer_id),
          h("td", null, account.name),
          h("td", null, account.plan ?? ""),
          h("td", { class: "num" }, String(account.total)),
          h("td", null, h("span", { class: `chip chip-${account.status}` }, HEALTH_LABEL[account.status] ?? account.status)),
          h("td", null, h("ul", { class: "reasons" }, ...(account.reasons ?? []).map((r) => h("li", null, r)))),
          h("td", null, account.action ?? ""),
        ),
      ),
    );
  }

  // --- outreach approvals --------------------------------------------------------------

  /** Reads the approval queue; errors go to the view's error line (a 401 signs out). */
  private async loadApprovals(): Promise<void> {
    const api = this.api;
    if (!api) return;
    const generation = ++this.approvalsGeneration;
    this.approvalsLoadedAt = Date.now();
    try {
      const { approvals } = await api.approvals();
      if (generation !== this.approvalsGeneration || api !== this.api) return;
      this.approvalsError.textContent = "";
      this.renderApprovals(approvals.filter((a) => !this.decided.has(a.send_id)));
    } catch (error) {
      if (generation !== this.approvalsGeneration || api !== this.api) return;
      if (error instanceof ApiError && error.status === 401) {
        this.signOut();
        this.loginError.textContent = describeError(error);
        return;
      }
      this.approvalsError.textContent = describeError(error);
    }
  }

  /** Adds new cards and drops gone ones in place, so a card that stays keeps its focus. */
  private renderApprovals(approvals: OutreachApproval[]): void {
    const wanted = new Set(approvals.map((a) => a.send_id));
    for (const [id, card] of this.approvalCards) {
      if (!wanted.has(id)) {
        card.remove();
        this.approvalCards.delete(id);
      }
    }
    approvals.forEach((approval, index) => {
      let card = this.approvalCards.get(approval.send_id);
      if (!card) {
        card = this.approvalCard(approval);
        this.approvalCards.set(approval.send_id, card);
      }
      const at = this.approvalList.children[index] ?? null;
      if (at !== card) this.approvalList.insertBefore(card, at);
    });
    this.renderApprovalCounts();
  }

  private renderApprovalCounts(): void {
    const count = this.approvalCards.size;
    this.approvalsEmpty.hidden = count > 0;
    this.approvalsCount.textContent = `（${count}件）`;
    this.approvalsTabCount.textContent = count ? `（${count}）` : "";
  }

  private approvalCard(approval: OutreachApproval): HTMLElement {
    const headingId = `approval-${approval.send_id}`;
    const trigger = TRIGGER_LABEL[approval.trigger] ?? approval.trigger;
    const approve = h(
      "button",
      { type: "button", class: "approve", "aria-label": `${approval.customer_id} へのご案内（${trigger}）を承認して送信` },
      "承認して送信",
    ) as HTMLButtonElement;
    const reject = h(
      "button",
      { type: "button", class: "reject", "aria-label": `${approval.customer_id} へのご案内（${trigger}）を送信しない` },
      "送信しない",
    ) as HTMLButtonElement;
    const time = h("time", { class: "approval-time" }, formatTime(approval.created_at));
    if (typeof approval.created_at === "string") time.setAttribute("datetime", approval.created_at);
    // tabindex -1: after a decision, focus moves to the next card instead of getting lost.
    const card = h(
      "li",
      {
        class: "approval",
        "data-send-id": approval.send_id,
        "data-trigger": approval.trigger,
        "aria-labelledby": headingId,
        tabindex: "-1",
      },
      h(
        "div",
        { class: "approval-top" },
        h("h3", { id: headingId }, approval.customer_id),
        h("span", { class: "chip chip-trigger" }, trigger),
        approval.variant ? h("span", { class: "approval-variant" }, `案${approval.variant}`) : null,
        time,
      ),
      h("p", { class: "approval-message" }, approval.message),
      h("div", { class: "approval-actions" }, approve, reject),
    );
    approve.addEventListener("click", () => void this.decide(approval, "approve", approve, [approve, reject]));
    reject.addEventListener("click", () => void this.decide(approval, "reject", reject, [approve, reject]));
    return card;
  }

  private async decide(
    approval: OutreachApproval,
    decision: "approve" | "reject",
    clicked: HTMLButtonElement,
    buttons: HTMLButtonElement[],
  ): Promise<void> {
    const api = this.api;
    if (!api) return;
    // Read before disabling: a disabled button drops the focus.
    const hadFocus = document.activeElement === clicked;
    buttons.forEach((b) => (b.disabled = true));
    this.approvalsNotice.textContent = "";
    this.approvalsError.textContent = "";
    const who = approval.customer_id;
    try {
      if (decision === "approve") {
        const { live } = await api.approve(approval.send_id);
        this.approvalsNotice.textContent = live
          ? `${who} へのご案内を送信しました（お客様のチャットに表示されました）。`
          : `${who} へのご案内を送信しました（お客様が次にチャットを開いたときに表示されます）。`;
      } else {
        await api.reject(approval.send_id);
        this.approvalsNotice.textContent = `${who} へのご案内は送信しないことにしました。`;
      }
    } catch (error) {
      if (error instanceof ApiError && error.status === 409) {
        this.approvalsNotice.textContent = `${who} へのご案内は、ほかの担当者がすでに対応済みです。一覧を更新しました。`;
      } else {
        buttons.forEach((b) => (b.disabled = false));
        if (hadFocus) clicked.focus();
        if (error instanceof ApiError && error.status === 401) {
          this.signOut();
          this.loginError.textContent = describeError(error);
          return;
        }
        this.approvalsError.textContent = describeError(error);
        return;
      }
    }
    // Decided (here or by someone else): the card goes now, then the list is read again.
    this.decided.add(approval.send_id);
    this.dropApprovalCard(approval.send_id, hadFocus);
    await this.loadApprovals();
  }

  /** With `moveFocus`, a keyboard user goes on from the next card (never onto a send button). */
  private dropApprovalCard(sendId: string, moveFocus: boolean): void {
    const card = this.approvalCards.get(sendId);
    if (!card) return;
    const next = (card.nextElementSibling ?? card.previousElementSibling) as HTMLElement | null;
    card.remove();
    this.approvalCards.delete(sendId);
    this.renderApprovalCounts();
    if (moveFocus) (next ?? byId("approvals-title")).focus();
  }
}

new Console().start();
