//! A session for each role, as the API tests use them.

use simcache_auth::{Authenticator, Role};

/// Tokens of fresh sessions for roles user, developer and admin.
pub async fn role_sessions(auth: &Authenticator) -> (String, String, String) {
    let mut out = Vec::new();
    for r in [Role::User, Role::Developer, Role::Admin] {
        let issued = auth
            .create_anonymous(r.privileges(), None)
            .await
            .unwrap_or_else(|e| panic!("cannot create a {} session: {}", r.name(), e.message));
        out.push(issued.token);
    }
    let admin = out.pop().unwrap_or_default();
    let dev = out.pop().unwrap_or_default();
    let user = out.pop().unwrap_or_default();
    (user, dev, admin)
}
