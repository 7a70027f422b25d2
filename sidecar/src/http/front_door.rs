//! What each connection serves: the memory-tier answer when there is one,
//! otherwise the router, with the peer address the login limiter keys on.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use axum::response::Response;
use axum::routing::future::RouteFuture;
use futures_util::future::{Either, Ready, ready};
use tower::Service;

use super::HotGet;

#[derive(Clone)]
pub struct FrontDoor {
    router: Router,
    hot: Option<Arc<HotGet>>,
    peer: SocketAddr,
}

impl FrontDoor {
    /// `hot` is `None` when the memory tier is off.
    pub fn new(router: Router, hot: Option<Arc<HotGet>>, peer: SocketAddr) -> Self {
        FrontDoor { router, hot, peer }
    }
}

impl Service<Request> for FrontDoor {
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Ready<Result<Response, Infallible>>, RouteFuture<Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The router is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        if let Some(resp) = self.hot.as_ref().and_then(|h| h.try_serve(&req)) {
            return Either::Left(ready(Ok(resp)));
        }
        req.extensions_mut().insert(ConnectInfo(self.peer));
        Either::Right(self.router.call(req))
    }
}
