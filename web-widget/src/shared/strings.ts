// User-facing Japanese text, in one place.

export const STRINGS = {
  defaultTitle: "チャットでご相談",
  subtitle: "AIアシスタントがお答えします",
  openChat: "チャットを開く",
  closeChat: "チャットを閉じる",
  placeholder: "メッセージを入力してください",
  send: "送信",
  you: "あなた",
  bot: "AIアシスタント",
  staff: "担当者",
  customer: "お客様",
  proactiveLabel: "お知らせ",
  unknownText: "（このメッセージは別の端末から送信されました）",
  unknownTextOperator: "（本文はこの画面では表示できません）",
  queued: "送信待ち",
  sending: "送信中…",
  failed: "送信できませんでした",
  connecting: "接続しています…",
  offline: "接続が切れました。再接続しています…",
  unauthorized: "認証に失敗しました。ページを再読み込みしてください。",
  typing: "入力中",
  sources: "参考情報",
  recommended: "おすすめのプラン",
  measurementHours: (hours: number) => `測定時間 ${hours}時間`,
  slotsTitle: "ご予約可能な日時",
  slotsHint: "ご希望の日時を選ぶと、予約のご依頼をお送りします。",
  slotRemaining: (n: number) => `残り${n}枠`,
  bookSlot: (label: string) => `${label} で予約をお願いします`,
  tool: (name: string | null): string => {
    switch (name) {
      case "recommend_plan":
        return "最適なプランを確認しています";
      case "check_availability":
        return "空き日程を確認しています";
      case "book_measurement":
        return "ご予約を手続きしています";
      case null:
        return "回答を準備しています";
      default:
        return "確認しています";
    }
  },
  /** While the turn waits for the model behind other customers (a `queue` frame). */
  modelQueue: (position: number, waitSecs: number): string =>
    `ただいま混み合っています（${position}番目・約${waitSecs < 60 ? `${Math.max(waitSecs, 1)}秒` : `${Math.ceil(waitSecs / 60)}分`}）`,
  bannerEscalated: "担当者におつなぎしています",
  bannerHuman: (name: string | null) => (name ? `担当の${name}が対応しています` : "担当者が対応しています"),
  bannerClosed: "この会話は終了しました",
  statusLine: (status: string): string => {
    switch (status) {
      case "escalated":
        return "担当者におつなぎしています。しばらくお待ちください。";
      case "human":
        return "担当者が対応を引き継ぎました。";
      case "bot":
        return "AIアシスタントが対応を再開しました。";
      case "closed":
        return "この会話は終了しました。ご利用ありがとうございました。";
      default:
        return "";
    }
  },
  newConversation: "新しい会話を始める",
  greeting: "こんにちは。ご質問やご相談をお気軽にお送りください。",
} as const;
