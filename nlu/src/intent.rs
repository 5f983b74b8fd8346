//! The intent inventory of `nlu/INTENTS.md`: what a message asks for, one label per message.
//! The model that reads it (a head over the e5 query embedding) is trained by
//! `kizuna train-intents`; this module only names the labels and who may have them.

use serde::{Deserialize, Serialize};

/// What a message asks for. Names are those of `nlu/INTENTS.md` and the training files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Intent {
    PlanPrice,
    PlanCompare,
    PlanRecommend,
    Availability,
    Book,
    Reschedule,
    Cancel,
    MyAccount,
    Faq,
    NoiseReport,
    Greeting,
    HumanRequest,
    OptOut,
    OptIn,
    Affirm,
    Deny,
    UpsellInterest,
    OutOfScope,
    MgrAtRisk,
    MgrAccountHealth,
    MgrFollowup,
    MgrUpsell,
    MgrSegments,
    MgrChurn,
    MgrInsight,
}

impl Intent {
    /// Every label, in the head's output order.
    pub const ALL: [Intent; 25] = [
        Intent::PlanPrice,
        Intent::PlanCompare,
        Intent::PlanRecommend,
        Intent::Availability,
        Intent::Book,
        Intent::Reschedule,
        Intent::Cancel,
        Intent::MyAccount,
        Intent::Faq,
        Intent::NoiseReport,
        Intent::Greeting,
        Intent::HumanRequest,
        Intent::OptOut,
        Intent::OptIn,
        Intent::Affirm,
        Intent::Deny,
        Intent::UpsellInterest,
        Intent::OutOfScope,
        Intent::MgrAtRisk,
        Intent::MgrAccountHealth,
        Intent::MgrFollowup,
        Intent::MgrUpsell,
        Intent::MgrSegments,
        Intent::MgrChurn,
        Intent::MgrInsight,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Intent::PlanPrice => "plan_price",
            Intent::PlanCompare => "plan_compare",
            Intent::PlanRecommend => "plan_recommend",
            Intent::Availability => "availability",
            Intent::Book => "book",
            Intent::Reschedule => "reschedule",
            Intent::Cancel => "cancel",
            Intent::MyAccount => "my_account",
            Intent::Faq => "faq",
            Intent::NoiseReport => "noise_report",
            Intent::Greeting => "greeting",
            Intent::HumanRequest => "human_request",
            Intent::OptOut => "opt_out",
            Intent::OptIn => "opt_in",
            Intent::Affirm => "affirm",
            Intent::Deny => "deny",
            Intent::UpsellInterest => "upsell_interest",
            Intent::OutOfScope => "out_of_scope",
            Intent::MgrAtRisk => "mgr_at_risk",
            Intent::MgrAccountHealth => "mgr_account_health",
            Intent::MgrFollowup => "mgr_followup",
            Intent::MgrUpsell => "mgr_upsell",
            Intent::MgrSegments => "mgr_segments",
            Intent::MgrChurn => "mgr_churn",
            Intent::MgrInsight => "mgr_insight",
        }
    }

    /// Position in [`Intent::ALL`] (the head's output index).
    pub fn index(self) -> usize {
        self as usize
    }

    /// A staff question about accounts: only managers may have it.
    pub fn is_manager_only(self) -> bool {
        self.index() >= Intent::MgrAtRisk.index()
    }

    /// Every label's name, in output order.
    pub fn names() -> Vec<String> {
        Self::ALL.iter().map(|i| i.as_str().to_string()).collect()
    }
}

impl std::fmt::Display for Intent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Intent {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Intent::ALL
            .into_iter()
            .find(|i| i.as_str() == s.trim())
            .ok_or_else(|| format!("unknown intent {s:?} (see nlu/INTENTS.md)"))
    }
}

/// The intent model's reading of one message: probabilities over [`Intent::ALL`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntentReading {
    pub probabilities: Vec<f32>,
}

impl IntentReading {
    pub fn probability(&self, intent: Intent) -> f32 {
        self.probabilities
            .get(intent.index())
            .copied()
            .unwrap_or(0.0)
    }

    /// The most probable intent among those `allowed` (customers never get a manager
    /// label, whatever the head says), with its probability renormalised over them.
    pub fn best(&self, allowed: impl Fn(Intent) -> bool) -> Option<(Intent, f32)> {
        let mut total = 0.0;
        let mut best: Option<(Intent, f32)> = None;
        for intent in Intent::ALL {
            if !allowed(intent) {
                continue;
            }
            let p = self.probability(intent);
            total += p;
            if best.is_none_or(|(_, q)| p > q) {
                best = Some((intent, p));
            }
        }
        best.map(|(i, p)| (i, if total > 0.0 { p / total } else { 0.0 }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_follow_the_output_order() {
        for (i, intent) in Intent::ALL.iter().enumerate() {
            assert_eq!(intent.index(), i);
            assert_eq!(intent.as_str().parse::<Intent>(), Ok(*intent));
            let json = serde_json::to_string(intent).unwrap();
            assert_eq!(json, format!("\"{}\"", intent.as_str()));
        }
        assert!("mgr_churn".parse::<Intent>().unwrap().is_manager_only());
        assert!(!Intent::OutOfScope.is_manager_only());
    }

    #[test]
    fn best_renormalises_over_the_allowed_labels() {
        let mut probabilities = vec![0.0; Intent::ALL.len()];
        probabilities[Intent::MgrChurn.index()] = 0.6;
        probabilities[Intent::Cancel.index()] = 0.3;
        probabilities[Intent::Faq.index()] = 0.1;
        let reading = IntentReading { probabilities };
        assert_eq!(reading.best(|_| true), Some((Intent::MgrChurn, 0.6)));
        let (intent, p) = reading.best(|i| !i.is_manager_only()).unwrap();
        assert_eq!(intent, Intent::Cancel);
        assert!((p - 0.75).abs() < 1e-6);
    }
}
