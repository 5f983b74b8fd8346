//! ZENBU's B2C measurement plans, from the seeds (003 §5.4 and §6.1):
//! スタンダード is 12,800円 with a 2-hour measurement; ライト→スタンダード is "+4,000円"
//! (so ライト is 8,800円, a 1-hour measurement); スタンダード→プレミアム is "+12,000円"
//! (so プレミアム is 24,800円, with a lawyer's review of the report); the AI mediation
//! service is "+8,000円".

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub id: &'static str,
    pub name: &'static str,
    pub price_jpy: u32,
    pub measurement_hours: u32,
    pub features: &'static [&'static str],
}

pub const LIGHT: Plan = Plan {
    id: "light",
    name: "ライトプラン",
    price_jpy: 8_800,
    measurement_hours: 1,
    features: &["1時間の騒音測定", "測定レポート"],
};

pub const STANDARD: Plan = Plan {
    id: "standard",
    name: "スタンダードプラン",
    price_jpy: 12_800,
    measurement_hours: 2,
    features: &[
        "2時間の騒音測定",
        "時間帯別の詳細分析",
        "周波数スペクトル解析",
        "法的根拠となる詳細レポート",
    ],
};

pub const PREMIUM: Plan = Plan {
    id: "premium",
    name: "プレミアムプラン",
    price_jpy: 24_800,
    measurement_hours: 2,
    features: &[
        "スタンダードプランの内容すべて",
        "弁護士レビュー付きで法的効力を強化",
    ],
};

pub const PLANS: [Plan; 3] = [LIGHT, STANDARD, PREMIUM];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AddOn {
    pub id: &'static str,
    pub name: &'static str,
    pub price_jpy: u32,
    pub description: &'static str,
}

pub const MEDIATION: AddOn = AddOn {
    id: "mediation",
    name: "AI仲裁サービス",
    price_jpy: 8_000,
    description: "AIが中立的に仲裁し、合意形成を支援します（合意形成率75%）",
};

pub fn by_id(id: &str) -> Option<Plan> {
    PLANS.into_iter().find(|p| p.id == id)
}

/// `12800` → `12,800円`.
pub fn yen(amount: u32) -> String {
    let digits = amount.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out.push('円');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_follow_the_seed_differences() {
        assert_eq!(STANDARD.price_jpy, 12_800);
        assert_eq!(STANDARD.price_jpy - LIGHT.price_jpy, 4_000);
        assert_eq!(PREMIUM.price_jpy - STANDARD.price_jpy, 12_000);
        assert_eq!(MEDIATION.price_jpy, 8_000);
        assert_eq!(yen(12_800), "12,800円");
        assert_eq!(yen(800), "800円");
        assert_eq!(yen(1_000_000), "1,000,000円");
    }
}
