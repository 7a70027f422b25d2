//! Test harness for simcache: real PostgreSQL, real processes, real HTTP.

pub mod balancer;
pub mod browser;
pub mod helm;
pub mod http;
pub mod k8s;
pub mod kubelet;
pub mod memory;
pub mod parquet_gen;
pub mod pg;
pub mod ports;
pub mod process;
pub mod prometheus;
pub mod roles;
pub mod s3;
pub mod sfm_sim;
pub mod slow_clients;
pub mod wait;

pub use pg::{PgServer, fresh_database};
pub use process::ServerProcess;

/// Runs each named async test function, `async fn name(ctx)`, once on SQLite
/// and once on PostgreSQL. The calling test binary provides
/// `common::sqlite()` and `common::postgres(hint)` returning its context.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(super::common::sqlite().await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(super::common::postgres(stringify!($name)).await).await
            }
        }
    )*};
}
