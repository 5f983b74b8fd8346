// Entry point of widget.js. Embed with
//   <script src="https://HOST/widget.js" data-kizuna-token="…" defer></script>
// Everything is drawn inside one shadow root; the only global is `window.Kizuna`.

import css from "./styles.css";
import { ChatClient } from "./client";
import { findOwnScript, resolveConfig, storageScope, websocketUrl } from "./config";
import { SavedConversation, sessionFlag } from "./storage";
import { WidgetView } from "./ui";

declare const __KIZUNA_VERSION__: string;

export interface KizunaApi {
  version: string;
  open(): void;
  close(): void;
  toggle(): void;
  /** Sends a message as the visitor; returns its client id, or null for empty text. */
  send(text: string): string | null;
  /** Forgets the current conversation and starts a new one. */
  newConversation(): void;
  readonly conversationId: string | null;
}

declare global {
  interface Window {
    Kizuna?: KizunaApi;
  }
}

function boot(script: HTMLScriptElement | null): void {
  if (window.Kizuna) return; // embedded twice: keep the first
  const config = resolveConfig(script, window.location.origin);
  const scope = storageScope(config);
  const saved = new SavedConversation(scope);

  const host = document.createElement("kizuna-widget");
  const shadow = host.attachShadow({ mode: "open" });
  let view: WidgetView | null = null;
  const client = new ChatClient(websocketUrl(config.serverUrl), config.token, saved, {
    changed: (keys) => view?.onChanged(keys),
    incoming: (entry) => view?.onIncoming(entry),
    reset: () => view?.onReset(),
    connection: (state) => view?.onConnection(state),
  });
  const panelFlag = sessionFlag(`${scope}:open`);
  if (config.open) panelFlag.set(true);
  const ui = new WidgetView(shadow, css, config.title, client, saved, panelFlag);
  view = ui;
  document.body.append(host);
  client.start();

  window.Kizuna = {
    version: __KIZUNA_VERSION__,
    open: () => ui.open(),
    close: () => ui.close(),
    toggle: () => ui.toggle(),
    send: (text: string) => ui.sendText(String(text)),
    newConversation: () => client.newConversation(),
    get conversationId() {
      return client.conversationId;
    },
  };
}

// currentScript is only set while this file first runs.
const script = findOwnScript();
if (document.body) boot(script);
else document.addEventListener("DOMContentLoaded", () => boot(script), { once: true });
