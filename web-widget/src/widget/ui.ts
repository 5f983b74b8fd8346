// The launcher and chat panel, drawn inside the widget's shadow root.

import { h } from "../shared/dom";
import { renderEntry, type RenderOptions } from "../shared/render";
import { STRINGS } from "../shared/strings";
import type { Entry } from "../shared/transcript";
import { MAX_MESSAGE_CHARS, type ChatClient, type ConnectionState } from "./client";
import type { SavedConversation } from "./storage";

const CHAT_ICON =
  '<svg viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round" aria-hidden="true"><path d="M21 12a8 8 0 0 1-11.6 7.1L4 20l1.1-4.4A8 8 0 1 1 21 12z"/></svg>';

export interface PanelFlag {
  get(): boolean;
  set(value: boolean): void;
}

export class WidgetView {
  private readonly rootEl: HTMLElement;
  private readonly launcher: HTMLButtonElement;
  private readonly badge: HTMLElement;
  private readonly panel: HTMLElement;
  private readonly conn: HTMLElement;
  private readonly banner: HTMLElement;
  private readonly bannerText: HTMLElement;
  private readonly newButton: HTMLButtonElement;
  private readonly log: HTMLElement;
  private readonly typing: HTMLElement;
  private readonly typingLabel: HTMLElement;
  private readonly input: HTMLTextAreaElement;
  private readonly sendButton: HTMLButtonElement;
  private readonly elements = new Map<string, HTMLElement>();
  private readonly renderOptions: RenderOptions;
  private unread = 0;
  private composing = false;
  private isOpen = false;

  constructor(
    shadow: ShadowRoot,
    css: string,
    title: string,
    private readonly client: ChatClient,
    private readonly saved: SavedConversation,
    private readonly panelFlag: PanelFlag,
  ) {
    this.renderOptions = { perspective: "customer", onSlot: (message, button) => this.chooseSlot(message, button) };
    shadow.append(h("style", null, css));

    this.launcher = h("button", { type: "button", class: "kz-launcher", "aria-label": STRINGS.openChat }) as HTMLButtonElement;
    this.launcher.innerHTML = CHAT_ICON; // constant markup, no user data
    this.badge = h("span", { class: "kz-badge", hidden: true, "aria-live": "polite" });
    this.launcher.append(this.badge);

    this.conn = h("div", { class: "kz-conn" }, STRINGS.connecting);
    const closeButton = h("button", { type: "button", class: "kz-close", "aria-label": STRINGS.closeChat }, "×");
    this.bannerText = h("span");
    this.newButton = h("button", { type: "button", hidden: true }, STRINGS.newConversation) as HTMLButtonElement;
    this.banner = h("div", { class: "kz-banner", role: "status", hidden: true }, this.bannerText, this.newButton);
    this.typingLabel = h("span");
    this.typing = h(
      "div",
      { class: "kz-typing", hidden: true, "aria-label": STRINGS.typing },
      h("span", { class: "kz-dots" }, h("i"), h("i"), h("i")),
      this.typingLabel,
    );
    this.log = h(
      "div",
      { class: "kz-log", role: "log", "aria-live": "polite" },
      h("div", { class: "kz-msg kz-msg--bot kz-greeting" }, h("div", { class: "kz-bubble" }, STRINGS.greeting)),
      this.typing,
    );
    this.input = h("textarea", {
      class: "kz-input",
      rows: "1",
      placeholder: STRINGS.placeholder,
      "aria-label": STRINGS.placeholder,
      maxlength: String(MAX_MESSAGE_CHARS),
      enterkeyhint: "send",
    }) as HTMLTextAreaElement;
    this.sendButton = h("button", { type: "submit", class: "kz-send" }, STRINGS.send) as HTMLButtonElement;
    const composer = h("form", { class: "kz-composer" }, this.input, this.sendButton);
    this.panel = h(
      "section",
      { class: "kz-panel", role: "dialog", "aria-label": title, hidden: true },
      h(
        "header",
        { class: "kz-header" },
        h("div", { class: "kz-heading" }, h("div", { class: "kz-title" }, title), this.conn),
        closeButton,
      ),
      this.banner,
      this.log,
      composer,
    );
    this.rootEl = h("div", { class: "kz-root", "data-open": "false" }, this.panel, this.launcher);
    shadow.append(this.rootEl);

    this.launcher.addEventListener("click", () => this.toggle());
    closeButton.addEventListener("click", () => this.close());
    this.newButton.addEventListener("click", () => this.client.newConversation());
    this.panel.addEventListener("keydown", (event) => {
      if (event.key === "Escape") this.close();
    });
    composer.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    this.input.addEventListener("compositionstart", () => (this.composing = true));
    this.input.addEventListener("compositionend", () => (this.composing = false));
    this.input.addEventListener("keydown", (event) => this.onKeydown(event));
    this.input.addEventListener("input", () => this.autosize());
    document.addEventListener("visibilitychange", () => {
      if (this.isOpen && document.visibilityState === "visible") this.markSeen();
    });

    this.renderAll();
    if (panelFlag.get()) this.open();
  }

  open(): void {
    this.isOpen = true;
    this.panel.hidden = false;
    this.rootEl.dataset.open = "true";
    this.launcher.setAttribute("aria-label", STRINGS.closeChat);
    this.panelFlag.set(true);
    this.markSeen();
    this.scrollToEnd(true);
    this.input.focus({ preventScroll: true });
  }

  close(): void {
    this.isOpen = false;
    this.panel.hidden = true;
    this.rootEl.dataset.open = "false";
    this.launcher.setAttribute("aria-label", STRINGS.openChat);
    this.panelFlag.set(false);
    this.launcher.focus({ preventScroll: true });
  }

  toggle(): void {
    if (this.isOpen) this.close();
    else this.open();
  }

  // --- client events -------------------------------------------------------------------

  onChanged(keys: string[]): void {
    const nearEnd = this.isNearEnd();
    for (const key of keys) {
      const entry = this.client.transcript.get(key);
      if (entry) this.draw(entry);
    }
    this.placeInOrder();
    this.updateStatus();
    this.scrollToEnd(nearEnd);
  }

  onIncoming(entry: Entry): void {
    if (entry.seq === undefined || entry.seq <= this.saved.state.seenSeq) return;
    if (this.isOpen && document.visibilityState === "visible") {
      this.markSeen();
    } else {
      this.unread += 1;
      this.showBadge();
    }
  }

  onReset(): void {
    for (const el of this.elements.values()) el.remove();
    this.elements.clear();
    this.unread = 0;
    this.showBadge();
    this.renderAll();
  }

  onConnection(state: ConnectionState): void {
    this.conn.dataset.state = state;
    this.conn.textContent =
      state === "online"
        ? STRINGS.subtitle
        : state === "connecting"
          ? STRINGS.connecting
          : state === "offline"
            ? STRINGS.offline
            : STRINGS.unauthorized;
  }

  // --- drawing -------------------------------------------------------------------------

  private renderAll(): void {
    for (const entry of this.client.transcript.ordered()) this.draw(entry);
    this.placeInOrder();
    this.updateStatus();
  }

  private draw(entry: Entry): void {
    const existing = this.elements.get(entry.key);
    if (existing && entry.streaming && existing.classList.contains("kz-streaming")) {
      // Streaming: only the text grows; keep the node.
      const bubble = existing.querySelector(".kz-bubble");
      if (bubble) bubble.textContent = entry.text ?? "";
      return;
    }
    const el = renderEntry(entry, this.renderOptions);
    if (existing) existing.replaceWith(el);
    this.elements.set(entry.key, el);
  }

  /** Puts entry nodes in transcript order, before the typing indicator; moves only on mismatch. */
  private placeInOrder(): void {
    const wanted = this.client.transcript
      .ordered()
      .map((e) => this.elements.get(e.key))
      .filter((el): el is HTMLElement => !!el);
    const current = Array.from(this.log.children).filter(
      (el) => el !== this.typing && !el.classList.contains("kz-greeting"),
    );
    const same = wanted.length === current.length && wanted.every((el, i) => el === current[i]);
    if (!same) for (const el of wanted) this.log.insertBefore(el, this.typing);
  }

  private updateStatus(): void {
    const transcript = this.client.transcript;
    const awaiting = transcript.awaitingReply();
    this.typing.hidden = !awaiting;
    this.typingLabel.textContent = transcript.queued
      ? STRINGS.modelQueue(transcript.queued.position, transcript.queued.waitSecs)
      : STRINGS.tool(transcript.activeTool);
    const status = transcript.status;
    this.banner.hidden = status === "bot";
    this.banner.dataset.status = status;
    this.bannerText.textContent =
      status === "escalated"
        ? STRINGS.bannerEscalated
        : status === "human"
          ? STRINGS.bannerHuman(transcript.agentName)
          : status === "closed"
            ? STRINGS.bannerClosed
            : "";
    // A closed conversation reopens with the bot on the next message; or start afresh.
    this.newButton.hidden = status !== "closed";
  }

  private showBadge(): void {
    this.badge.hidden = this.unread === 0;
    this.badge.textContent = this.unread > 99 ? "99+" : String(this.unread);
  }

  private markSeen(): void {
    this.unread = 0;
    this.showBadge();
    if (this.saved.state.seenSeq !== this.client.transcript.lastSeq) {
      this.saved.state.seenSeq = this.client.transcript.lastSeq;
      this.saved.save();
    }
  }

  private isNearEnd(): boolean {
    return this.log.scrollHeight - this.log.scrollTop - this.log.clientHeight < 80;
  }

  private scrollToEnd(force: boolean): void {
    if (force) this.log.scrollTop = this.log.scrollHeight;
  }

  // --- input ---------------------------------------------------------------------------

  private onKeydown(event: KeyboardEvent): void {
    if (event.key !== "Enter") return;
    // Enter that confirms an IME conversion (kana → kanji) must never send. Safari reports
    // the confirming keydown after compositionend, but with keyCode 229.
    if (event.isComposing || this.composing || event.keyCode === 229) return;
    if (event.shiftKey) return; // a new line
    event.preventDefault();
    this.submit();
  }

  private submit(): void {
    const id = this.client.send(this.input.value);
    if (id === null) return;
    this.input.value = "";
    this.autosize();
    this.scrollToEnd(true);
  }

  private chooseSlot(message: string, button: HTMLButtonElement): void {
    const card = button.closest(".kz-slot-list");
    card?.querySelectorAll("button").forEach((b) => ((b as HTMLButtonElement).disabled = true));
    button.classList.add("kz-chosen");
    this.client.send(message);
    this.scrollToEnd(true);
  }

  private autosize(): void {
    this.input.style.height = "auto";
    this.input.style.height = `${Math.min(this.input.scrollHeight + 2, 120)}px`;
  }

  /** For the page's API. */
  sendText(text: string): string | null {
    const id = this.client.send(text);
    if (id !== null) this.scrollToEnd(true);
    return id;
  }
}
