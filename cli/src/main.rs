//! `simcache`: see the library's documentation and `simcache --help`.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let code = simcache::main_with(std::env::args().collect()).await;
    simcache::commands::flush();
    code
}
