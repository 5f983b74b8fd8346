//! The evaluation harness: replays conversations written in the transcript format of
//! `shared/spec/transcripts.md` against the agent and scores every expectation.
//!
//! A [`Target`] runs conversations: in-process over a fresh store per transcript (the binary
//! supplies how to build the hub), or over the websocket of a running server.

pub mod report;
pub mod runner;
pub mod transcript;

pub use report::{Report, TranscriptResult};
pub use runner::{run_all, RunOptions, Session, Target, TurnOutcome, WebsocketTarget};
pub use transcript::{load_dir, Expect, Transcript, Turn};

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    BadTranscript { path: String, message: String },
    #[error("{0}")]
    Target(String),
}

/// NFKC, then digit-group commas removed: `12,800円` and `１２８００円` both become `12800円`
/// (the matching rule of the transcript format).
pub fn normalize(text: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    let nfkc: Vec<char> = text.nfkc().collect();
    let mut out = String::with_capacity(nfkc.len());
    for (i, c) in nfkc.iter().enumerate() {
        let group_comma = *c == ','
            && i > 0
            && nfkc[i - 1].is_ascii_digit()
            && nfkc.len() > i + 3
            && nfkc[i + 1..i + 4].iter().all(|d| d.is_ascii_digit())
            && nfkc.get(i + 4).is_none_or(|d| !d.is_ascii_digit());
        if !group_comma {
            out.push(*c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn normalisation_matches_prices_in_any_form() {
        assert_eq!(normalize("12,800円"), "12800円");
        assert_eq!(normalize("１２，８００円"), "12800円");
        assert_eq!(normalize("1,234,567"), "1234567");
        // Not a digit group: kept.
        assert_eq!(normalize("1,2"), "1,2");
        assert_eq!(normalize("はい,そうです"), "はい,そうです");
        assert_eq!(normalize("12,8000"), "12,8000");
    }
}
