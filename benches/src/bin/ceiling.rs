//! The ceiling: a bare hyper server answering every request with a fixed body
//! of the size of a cache hit. Nothing we build on this machine can beat it,
//! so our figures are reported as ratios to it.
//!
//! `ceiling --file PATH` streams that file instead, as a bare file server
//! would (the peer of the SOR cache's disk tier).
//!
//! Usage: ceiling [BODY_BYTES] | ceiling --file PATH   (prints its URL on the first stdout line)

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--file") {
        let path = std::path::PathBuf::from(args.get(1).cloned().unwrap_or_default());
        return serve_file(path);
    }
    let size: usize = args.first().map(|s| s.parse()).transpose()?.unwrap_or(420);
    let body = Bytes::from(vec![b'x'; size]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("ceiling serving on http://{}", listener.local_addr()?);
        loop {
            let (stream, _) = listener.accept().await?;
            let body = body.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |_req: Request<hyper::body::Incoming>| {
                    let body = body.clone();
                    async move {
                        Ok::<_, Infallible>(
                            Response::builder()
                                .header("content-type", "application/json")
                                .body(Full::new(body))
                                .unwrap_or_default(),
                        )
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    })
}

/// Streams `path` in 256 KiB reads per request.
fn serve_file(path: std::path::PathBuf) -> anyhow::Result<()> {
    use futures_util::TryStreamExt;
    use http_body_util::StreamBody;
    use hyper::body::Frame;
    let len = std::fs::metadata(&path)?.len();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("file ceiling serving on http://{}", listener.local_addr()?);
        loop {
            let (stream, _) = listener.accept().await?;
            let path = path.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |_req: Request<hyper::body::Incoming>| {
                    let path = path.clone();
                    async move {
                        let file = tokio::fs::File::open(&path).await?;
                        let frames = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024)
                            .map_ok(Frame::data);
                        Response::builder()
                            .header("content-length", len)
                            .body(StreamBody::new(frames))
                            .map_err(std::io::Error::other)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    })
}
