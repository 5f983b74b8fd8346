//! Who is talking: anonymous visitors, customers and managers.
//!
//! Customers and managers present a token signed by the business's backend with a shared
//! secret (HMAC-SHA256, like Chatwoot's identity verification). Tools only ever see the
//! verified [`Identity`], never what the conversation claims.
//!
//! Token: `v1.<base64url(claims JSON)>.<base64url(HMAC-SHA256(secret, "v1.<claims>"))>`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Roles are part of the wire protocol (the `welcome` frame says which one a socket has).
pub use kizuna_protocol::Role;

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub role: Role,
    /// Stable id of the caller: the customer id, the manager's id, or an anonymous visitor id.
    pub subject: String,
    /// Set for customers only: the account whose data tools may read.
    pub customer_id: Option<String>,
    pub display_name: Option<String>,
    /// Where the caller connects from (the transport sets it), for per-address budgets such
    /// as anonymous escalations; never stored or sent.
    #[serde(skip)]
    pub address: Option<std::net::IpAddr>,
}

impl Identity {
    pub fn anonymous(visitor_id: impl Into<String>) -> Self {
        Self {
            role: Role::Anonymous,
            subject: visitor_id.into(),
            customer_id: None,
            display_name: None,
            address: None,
        }
    }

    pub fn customer(customer_id: impl Into<String>) -> Self {
        let id = customer_id.into();
        Self {
            role: Role::Customer,
            subject: id.clone(),
            customer_id: Some(id),
            display_name: None,
            address: None,
        }
    }

    pub fn manager(manager_id: impl Into<String>) -> Self {
        Self {
            role: Role::Manager,
            subject: manager_id.into(),
            customer_id: None,
            display_name: None,
            address: None,
        }
    }

    /// Whether this caller may read data of `customer_id`: managers may read any account,
    /// customers only their own, anonymous visitors none.
    pub fn may_read_customer(&self, customer_id: &str) -> bool {
        match self.role {
            Role::Manager => true,
            Role::Customer => self.customer_id.as_deref() == Some(customer_id),
            Role::Anonymous => false,
        }
    }
}

/// What a token asserts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub role: Role,
    /// Customer id (role customer) or manager id (role manager).
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Expiry, Unix seconds.
    pub exp: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the token is malformed")]
    Malformed,
    #[error("the token signature is invalid")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("tokens cannot assert the anonymous role")]
    AnonymousClaim,
    #[error("the token secret is too short (at least 32 bytes)")]
    WeakSecret,
}

/// Signs and verifies identity tokens with a shared secret.
#[derive(Clone)]
pub struct TokenVerifier {
    secret: Vec<u8>,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenVerifier { secret: <redacted> }")
    }
}

const PREFIX: &str = "v1.";

impl TokenVerifier {
    pub fn new(secret: impl Into<Vec<u8>>) -> Result<Self, AuthError> {
        let secret = secret.into();
        if secret.len() < 32 {
            return Err(AuthError::WeakSecret);
        }
        Ok(Self { secret })
    }

    fn mac(&self, signed_part: &str) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes any key length");
        mac.update(signed_part.as_bytes());
        mac
    }

    pub fn sign(&self, claims: &Claims) -> String {
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims serialise"));
        let signed_part = format!("{PREFIX}{body}");
        let sig = URL_SAFE_NO_PAD.encode(self.mac(&signed_part).finalize().into_bytes());
        format!("{signed_part}.{sig}")
    }

    /// Verifies a token (constant-time signature check) and returns the identity it proves.
    pub fn verify(&self, token: &str, now_unix: i64) -> Result<Identity, AuthError> {
        let rest = token.strip_prefix(PREFIX).ok_or(AuthError::Malformed)?;
        let (body, sig) = rest.split_once('.').ok_or(AuthError::Malformed)?;
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| AuthError::Malformed)?;
        self.mac(&format!("{PREFIX}{body}"))
            .verify_slice(&sig)
            .map_err(|_| AuthError::BadSignature)?;
        let json = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| AuthError::Malformed)?;
        let claims: Claims = serde_json::from_slice(&json).map_err(|_| AuthError::Malformed)?;
        if claims.exp <= now_unix {
            return Err(AuthError::Expired);
        }
        if claims.sub.is_empty() || claims.sub.len() > 128 {
            return Err(AuthError::Malformed);
        }
        let mut identity = match claims.role {
            Role::Customer => Identity::customer(claims.sub),
            Role::Manager => Identity::manager(claims.sub),
            Role::Anonymous => return Err(AuthError::AnonymousClaim),
        };
        identity.display_name = claims.name;
        Ok(identity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verifier() -> TokenVerifier {
        TokenVerifier::new(b"0123456789abcdef0123456789abcdef".to_vec()).unwrap()
    }

    fn claims(role: Role, sub: &str, exp: i64) -> Claims {
        Claims {
            role,
            sub: sub.into(),
            name: None,
            exp,
        }
    }

    #[test]
    fn customer_token_round_trips() {
        let v = verifier();
        let token = v.sign(&claims(Role::Customer, "C-1001", 2_000));
        let id = v.verify(&token, 1_000).unwrap();
        assert_eq!(id.role, Role::Customer);
        assert_eq!(id.customer_id.as_deref(), Some("C-1001"));
        assert!(id.may_read_customer("C-1001"));
        assert!(!id.may_read_customer("C-1002"));
    }

    #[test]
    fn manager_may_read_any_customer_anonymous_none() {
        let v = verifier();
        let m = v
            .verify(&v.sign(&claims(Role::Manager, "M-1", 2_000)), 1_000)
            .unwrap();
        assert!(m.may_read_customer("C-1001"));
        assert!(m.customer_id.is_none());
        assert!(!Identity::anonymous("v").may_read_customer("C-1001"));
    }

    #[test]
    fn tampered_claims_are_rejected() {
        let v = verifier();
        let token = v.sign(&claims(Role::Customer, "C-1001", 2_000));
        let (head, sig) = token.rsplit_once('.').unwrap();
        let forged_body = URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(&claims(Role::Manager, "C-1001", 2_000)).unwrap());
        let forged = format!("{PREFIX}{forged_body}.{sig}");
        assert_eq!(v.verify(&forged, 1_000), Err(AuthError::BadSignature));
        assert!(head.starts_with(PREFIX));
    }

    #[test]
    fn other_secret_expiry_and_garbage_are_rejected() {
        let v = verifier();
        let other = TokenVerifier::new(b"ffffffffffffffffffffffffffffffff".to_vec()).unwrap();
        let token = other.sign(&claims(Role::Customer, "C-1", 2_000));
        assert_eq!(v.verify(&token, 1_000), Err(AuthError::BadSignature));
        let expired = v.sign(&claims(Role::Customer, "C-1", 1_000));
        assert_eq!(v.verify(&expired, 1_000), Err(AuthError::Expired));
        assert_eq!(v.verify("hello", 0), Err(AuthError::Malformed));
        assert_eq!(v.verify("v1.%%%.%%%", 0), Err(AuthError::Malformed));
        let anon = v.sign(&claims(Role::Anonymous, "x", 2_000));
        assert_eq!(v.verify(&anon, 1_000), Err(AuthError::AnonymousClaim));
    }

    #[test]
    fn short_secrets_are_refused() {
        assert_eq!(
            TokenVerifier::new(b"short".to_vec()).unwrap_err(),
            AuthError::WeakSecret
        );
    }
}
