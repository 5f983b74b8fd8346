// Where the widget's settings come from: the embedding <script> tag's data attributes, or a
// `window.kizunaConfig` object set before it; the server defaults to the script's own origin.

import { STRINGS } from "../shared/strings";

export interface WidgetConfig {
  /** Customer token signed by the business's backend; empty for anonymous visitors. */
  token: string;
  /** http(s) origin of the Kizuna server. */
  serverUrl: string;
  title: string;
  /** Start with the panel open. */
  open: boolean;
}

interface UserConfig {
  token?: string;
  serverUrl?: string;
  title?: string;
  open?: boolean;
}

export function findOwnScript(): HTMLScriptElement | null {
  const current = document.currentScript;
  if (current instanceof HTMLScriptElement) return current;
  // Inserted by a loader that left currentScript unset: find the tag by its attributes.
  return (
    document.querySelector<HTMLScriptElement>("script[data-kizuna-token]") ??
    document.querySelector<HTMLScriptElement>('script[src*="widget.js"]')
  );
}

export function resolveConfig(script: HTMLScriptElement | null, fallbackOrigin: string): WidgetConfig {
  const user = ((window as unknown as { kizunaConfig?: UserConfig }).kizunaConfig ?? {}) as UserConfig;
  const data = script?.dataset ?? {};
  const scriptOrigin = script?.src ? new URL(script.src, document.baseURI).origin : fallbackOrigin;
  const serverUrl = (data.kizunaServerUrl || user.serverUrl || scriptOrigin).replace(/\/+$/, "");
  return {
    token: (data.kizunaToken ?? user.token ?? "").trim(),
    serverUrl,
    title: data.kizunaTitle || user.title || STRINGS.defaultTitle,
    open: data.kizunaOpen === "true" || user.open === true,
  };
}

export function websocketUrl(serverUrl: string): string {
  const url = new URL("/ws", serverUrl);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.toString();
}

/**
 * Storage scope: one conversation per identity per server. Reads the (unverified) claims of
 * the token only to name the scope; the server verifies the token itself.
 */
export function storageScope(config: WidgetConfig): string {
  const host = new URL(config.serverUrl).host;
  let who = "anonymous";
  const claims = config.token.split(".")[1];
  if (claims) {
    try {
      const json = atob(claims.replace(/-/g, "+").replace(/_/g, "/"));
      const parsed = JSON.parse(json) as { role?: string; sub?: string };
      if (parsed.sub) who = `${parsed.role ?? "customer"}:${parsed.sub}`;
    } catch {
      who = "token";
    }
  }
  return `kizuna:${host}:${who}`;
}
