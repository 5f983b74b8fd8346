//! Account-link tokens: how a business ties a LINE user to a CRM customer (docs/line.md).
//!
//! The business (its signed-in web page, email or app) issues a token for one customer with
//! `kizuna line link-token` or `POST /api/line/link-tokens`; the customer sends it to the
//! LINE Official Account (a `https://line.me/R/oaMessage/…` link fills it in), and the webhook
//! links the sender. A token is
//!
//! `KZL1.<base64url(JSON {"c": customer id, "exp": Unix seconds, "n": nonce})>.<base64url(HMAC-SHA256(secret, "KZL1.<payload>"))>`
//!
//! signed with the server's token secret; the `KZL1.` prefix is part of the signed text, so a
//! link token can never pass as an identity token (`v1.`) or the other way round. The nonce
//! makes each token single-use: the store records it when the token is redeemed.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

pub const PREFIX: &str = "KZL1.";
/// Customer ids are at most this long (as in identity tokens).
const MAX_CUSTOMER_ID: usize = 128;
/// A token is well under this; anything longer is not read.
const MAX_TOKEN_CHARS: usize = 1024;

/// What a link token asserts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkClaims {
    /// The CRM customer id.
    #[serde(rename = "c")]
    pub customer_id: String,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// Random, once per token.
    #[serde(rename = "n")]
    pub nonce: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("the link token is malformed")]
    Malformed,
    #[error("the link token's signature is invalid")]
    BadSignature,
    #[error("the link token has expired")]
    Expired,
}

/// Signs and verifies link tokens with the server's secret.
#[derive(Clone)]
pub struct LinkSigner {
    secret: Vec<u8>,
}

impl std::fmt::Debug for LinkSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkSigner { secret: <redacted> }")
    }
}

impl LinkSigner {
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        Self {
            secret: secret.into(),
        }
    }

    fn mac(&self, signed_part: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes any key");
        mac.update(signed_part.as_bytes());
        mac
    }

    /// A token for `customer_id` valid until `exp` (Unix seconds), with a fresh nonce.
    pub fn issue(&self, customer_id: &str, exp: i64) -> (String, LinkClaims) {
        let claims = LinkClaims {
            customer_id: customer_id.to_string(),
            exp,
            nonce: uuid::Uuid::new_v4().simple().to_string(),
        };
        (self.sign(&claims), claims)
    }

    pub fn sign(&self, claims: &LinkClaims) -> String {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims serialise"));
        let signed_part = format!("{PREFIX}{payload}");
        let sig = URL_SAFE_NO_PAD.encode(self.mac(&signed_part).finalize().into_bytes());
        format!("{signed_part}.{sig}")
    }

    /// Checks the signature (in constant time), then the expiry.
    pub fn verify(&self, token: &str, now_unix: i64) -> Result<LinkClaims, LinkError> {
        if token.len() > MAX_TOKEN_CHARS {
            return Err(LinkError::Malformed);
        }
        let rest = token.strip_prefix(PREFIX).ok_or(LinkError::Malformed)?;
        let (payload, sig) = rest.split_once('.').ok_or(LinkError::Malformed)?;
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| LinkError::Malformed)?;
        self.mac(&format!("{PREFIX}{payload}"))
            .verify_slice(&sig)
            .map_err(|_| LinkError::BadSignature)?;
        let json = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| LinkError::Malformed)?;
        let claims: LinkClaims = serde_json::from_slice(&json).map_err(|_| LinkError::Malformed)?;
        if claims.customer_id.is_empty()
            || claims.customer_id.len() > MAX_CUSTOMER_ID
            || claims.nonce.is_empty()
        {
            return Err(LinkError::Malformed);
        }
        if claims.exp <= now_unix {
            return Err(LinkError::Expired);
        }
        Ok(claims)
    }
}

/// The link token in a chat message, if the message carries one: the user may send it alone
/// or with words around it (a pasted link, a greeting).
pub fn find_token(text: &str) -> Option<&str> {
    let start = text.find(PREFIX)?;
    let rest = &text[start..];
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        .unwrap_or(rest.len());
    Some(rest[..end].trim_end_matches('.'))
}

/// The link that opens a chat with the account (`basic_id`, e.g. `@zenbu`) with the token
/// already typed in: LINE's `oaMessage` URL scheme.
pub fn chat_url(basic_id: &str, token: &str) -> String {
    // The token is base64url and dots: nothing in it needs escaping in a query.
    let id = basic_id.trim().replace('@', "%40");
    format!("https://line.me/R/oaMessage/{id}/?{token}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> LinkSigner {
        LinkSigner::new(b"0123456789abcdef0123456789abcdef".to_vec())
    }

    #[test]
    fn a_token_round_trips_and_each_has_its_own_nonce() {
        let s = signer();
        let (token, claims) = s.issue("B-2001", 2_000);
        assert!(token.starts_with("KZL1."));
        assert_eq!(s.verify(&token, 1_000).unwrap(), claims);
        let (other, other_claims) = s.issue("B-2001", 2_000);
        assert_ne!(token, other);
        assert_ne!(claims.nonce, other_claims.nonce);
    }

    #[test]
    fn forged_expired_and_garbage_tokens_are_refused() {
        let s = signer();
        let (token, claims) = s.issue("B-2001", 2_000);
        assert_eq!(s.verify(&token, 2_000), Err(LinkError::Expired));
        // Another customer in the payload, the old signature.
        let sig = token.rsplit_once('.').unwrap().1;
        let forged_payload = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&LinkClaims {
                customer_id: "B-9999".into(),
                ..claims.clone()
            })
            .unwrap(),
        );
        let forged = format!("{PREFIX}{forged_payload}.{sig}");
        assert_eq!(s.verify(&forged, 1_000), Err(LinkError::BadSignature));
        // Signed with another secret.
        let other = LinkSigner::new(b"ffffffffffffffffffffffffffffffff".to_vec());
        assert_eq!(
            s.verify(&other.sign(&claims), 1_000),
            Err(LinkError::BadSignature)
        );
        // An identity token's layout under the link prefix is not a link token.
        assert_eq!(s.verify("v1.abc.def", 1_000), Err(LinkError::Malformed));
        assert_eq!(s.verify("KZL1.%%%.%%%", 1_000), Err(LinkError::Malformed));
        assert_eq!(s.verify("KZL1.", 1_000), Err(LinkError::Malformed));
        let empty = s.sign(&LinkClaims {
            customer_id: String::new(),
            exp: 2_000,
            nonce: "n".into(),
        });
        assert_eq!(s.verify(&empty, 1_000), Err(LinkError::Malformed));
    }

    #[test]
    fn the_token_is_found_in_a_message_and_the_chat_url_carries_it() {
        let s = signer();
        let (token, _) = s.issue("C-1", 2_000);
        assert_eq!(find_token(&token), Some(token.as_str()));
        let said = format!("連携お願いします {token}。");
        assert_eq!(find_token(&said), Some(token.as_str()));
        let said = format!("{token}.");
        assert_eq!(find_token(&said), Some(token.as_str()));
        assert_eq!(find_token("料金を教えて"), None);
        let url = chat_url("@zenbu", &token);
        assert_eq!(
            url,
            format!("https://line.me/R/oaMessage/%40zenbu/?{token}")
        );
        assert_eq!(
            find_token(&url),
            Some(token.as_str()),
            "the URL's text is the token"
        );
    }
}
