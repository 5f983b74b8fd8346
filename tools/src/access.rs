//! Whose data a call may touch. The answer comes only from the verified identity in the
//! [`ToolContext`]; a `customer_id` argument is honoured for managers and otherwise only when
//! it names the caller's own account. Refusals never echo anything about the other account.

use kizuna_agent::identity::Role;
use kizuna_agent::tool::{ToolContext, ToolError};

pub(crate) const LOGIN_REQUIRED: &str =
    "ログインしたお客様のみご利用いただけます。お手数ですが、ログインのうえもう一度お試しください。";
pub(crate) const OTHER_ACCOUNT: &str = "ご本人のアカウント以外の情報は確認・操作できません。";
pub(crate) const MANAGERS_ONLY: &str =
    "この機能は管理者（カスタマーサクセス担当者）のみご利用いただけます。";

/// The account a call is about: the caller's own for customers, the `requested` one for
/// managers (who must name one).
pub(crate) fn target_customer(
    ctx: &ToolContext,
    requested: Option<&str>,
) -> Result<String, ToolError> {
    let requested = requested.map(str::trim).filter(|s| !s.is_empty());
    match ctx.identity.role {
        Role::Anonymous => Err(ToolError::Forbidden(LOGIN_REQUIRED.into())),
        Role::Customer => {
            let own = ctx
                .identity
                .customer_id
                .as_deref()
                .ok_or_else(|| ToolError::Forbidden(LOGIN_REQUIRED.into()))?;
            match requested {
                Some(other) if other != own => Err(ToolError::Forbidden(OTHER_ACCOUNT.into())),
                _ => Ok(own.to_string()),
            }
        }
        Role::Manager => requested.map(str::to_string).ok_or_else(|| {
            ToolError::InvalidArguments("customer_id is required for managers".into())
        }),
    }
}

pub(crate) fn require_manager(ctx: &ToolContext) -> Result<(), ToolError> {
    match ctx.identity.role {
        Role::Manager => Ok(()),
        Role::Anonymous => Err(ToolError::Forbidden(format!(
            "{MANAGERS_ONLY}{LOGIN_REQUIRED}"
        ))),
        Role::Customer => Err(ToolError::Forbidden(MANAGERS_ONLY.into())),
    }
}

/// The logged-in customer's own id; anyone else is refused.
pub(crate) fn require_customer(ctx: &ToolContext) -> Result<String, ToolError> {
    match (ctx.identity.role, ctx.identity.customer_id.as_deref()) {
        (Role::Customer, Some(id)) => Ok(id.to_string()),
        _ => Err(ToolError::Forbidden(LOGIN_REQUIRED.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kizuna_agent::identity::Identity;

    fn ctx(identity: Identity) -> ToolContext {
        ToolContext {
            identity,
            conversation_id: "c".into(),
            now: chrono::DateTime::parse_from_rfc3339("2026-11-21T10:00:00+09:00").unwrap(),
        }
    }

    #[test]
    fn customers_get_their_own_account_only() {
        let c = ctx(Identity::customer("C-1"));
        assert_eq!(target_customer(&c, None).unwrap(), "C-1");
        assert_eq!(target_customer(&c, Some("C-1")).unwrap(), "C-1");
        assert_eq!(target_customer(&c, Some(" ")).unwrap(), "C-1");
        let err = target_customer(&c, Some("C-2")).unwrap_err();
        assert!(matches!(err, ToolError::Forbidden(_)));
        assert!(!err.to_string().contains("C-2"));
    }

    #[test]
    fn managers_name_the_account_and_anonymous_callers_get_nothing() {
        let m = ctx(Identity::manager("M-1"));
        assert_eq!(target_customer(&m, Some("C-2")).unwrap(), "C-2");
        assert!(matches!(
            target_customer(&m, None),
            Err(ToolError::InvalidArguments(_))
        ));
        let a = ctx(Identity::anonymous("v"));
        assert!(matches!(
            target_customer(&a, Some("C-1")),
            Err(ToolError::Forbidden(_))
        ));
        assert!(require_manager(&m).is_ok());
        assert!(require_manager(&a).is_err());
        assert!(require_manager(&ctx(Identity::customer("C-1"))).is_err());
        assert!(require_customer(&m).is_err());
        assert_eq!(
            require_customer(&ctx(Identity::customer("C-1"))).unwrap(),
            "C-1"
        );
    }
}
