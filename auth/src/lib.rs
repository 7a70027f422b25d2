//! Who may do what: roles and privileges, sessions, passwords and the login
//! rate limiter, plus the HTTP pieces every simcache server uses to check them.

pub mod authenticator;
pub mod cookie;
pub mod limiter;
mod password;
mod privileges;
pub mod routes;
pub mod session_cache;
mod token;

pub use authenticator::{AuthConfig, Authenticator, IssuedSession, Scope, Session};
pub use privileges::{Privilege, PrivilegeSet, Role};
