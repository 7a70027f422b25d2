//! `kubectl simcache …`: kubectl runs this plugin for its `simcache`
//! subcommand; it is the `simcache` command line under another name.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let mut args: Vec<String> = std::env::args().collect();
    if let Some(first) = args.first_mut() {
        *first = "kubectl simcache".into();
    }
    let code = simcache::main_with(args).await;
    simcache::commands::flush();
    code
}
