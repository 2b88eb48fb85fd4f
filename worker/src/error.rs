//! Every way a request can fail in a worker, and the one place that turns a failure into the
//! status of DESIGN section 8 (400/404/405/408/502/503/504) and into rproxy's own response. The stages only say what went
//! wrong; none of them picks a status.

use std::net::SocketAddr;

use http::header::{CONNECTION, CONTENT_TYPE};
use http::{HeaderValue, Response, StatusCode};

use crate::body::ProxyBody;
use crate::pool::NoConnection;

/// Why rproxy answers a request itself instead of with a downstream's response.
#[derive(Debug)]
pub enum ProxyError {
    /// A head a proxy must not forward (DESIGN sections 7 and 8); the connection closes after it.
    BadRequest(&'static str),
    /// A malformed request body (a bad chunk), or one the client did not finish; the
    /// connection closes after it.
    BadBody(String),
    /// The client paused mid-body longer than its `read-timeout` (a rule's
    /// `upstream-read-timeout` when it sets one), before or after a downstream connection was
    /// leased (that one, mid-request, is discarded); the connection closes.
    ClientBodyTimeout,
    /// The rewritten path is not a valid request target (the connection stays open).
    BadRewrite,
    /// No route for the request's host and path.
    NotFound,
    /// `CONNECT`: rproxy is no tunnel; answered without touching a downstream.
    MethodNotAllowed,
    /// No downstream connection could be had (every member down, queue full, waited too long).
    NoConnection(NoConnection),
    /// Every connection tried was closed before the request could be written.
    DownstreamClosed,
    /// The downstream did not answer within its `read-timeout`.
    DownstreamReadTimeout,
    /// Writing the request to the downstream took longer than its `write-timeout`.
    DownstreamWriteTimeout,
    /// The chosen connection was reset, closed before a response, or answered with something
    /// that is not HTTP (what happened, and the I/O error when there was one).
    Downstream(&'static str, Option<std::io::Error>),
    /// `101 Switching Protocols` to a request that asked for no (WebSocket) upgrade: the
    /// connection would become a tunnel the client never negotiated.
    UnrequestedSwitch,
}

impl ProxyError {
    /// A failed write or read on a downstream connection: a write that timed out
    /// (`TimedIo`) is RProxy's 503, everything else a 502.
    pub fn downstream(what: &'static str, e: std::io::Error) -> ProxyError {
        if e.kind() == std::io::ErrorKind::TimedOut {
            ProxyError::DownstreamWriteTimeout
        } else {
            ProxyError::Downstream(what, Some(e))
        }
    }

    /// The status of DESIGN section 8: decided here and nowhere else.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) | ProxyError::BadBody(_) | ProxyError::BadRewrite => {
                StatusCode::BAD_REQUEST
            }
            ProxyError::ClientBodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::NotFound => StatusCode::NOT_FOUND,
            ProxyError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::NoConnection(_) | ProxyError::DownstreamWriteTimeout => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::DownstreamClosed
            | ProxyError::Downstream(..)
            | ProxyError::UnrequestedSwitch => StatusCode::BAD_GATEWAY,
            ProxyError::DownstreamReadTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// Whether the client connection must end with this response: after a request whose
    /// framing we refused, the rest of the stream cannot be trusted.
    pub fn closes(&self) -> bool {
        matches!(
            self,
            ProxyError::BadRequest(_) | ProxyError::BadBody(_) | ProxyError::ClientBodyTimeout
        )
    }

    /// rproxy's own response for this failure. `client` and `downstream` only go to the debug
    /// log.
    pub fn into_response(
        self,
        client: SocketAddr,
        downstream: Option<SocketAddr>,
    ) -> Response<ProxyBody> {
        let code = self.status();
        match downstream {
            Some(d) => rproxy_shared::debug!("{code} for {client} from {d}: {self}"),
            None => rproxy_shared::debug!("{code} for {client}: {self}"),
        }
        let mut r = Response::new(ProxyBody::text(text(code)));
        *r.status_mut() = code;
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        if self.closes() {
            r.headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
        r
    }
}

/// rproxy's own body text for `code`.
pub fn text(code: StatusCode) -> &'static str {
    match code {
        StatusCode::BAD_REQUEST => "400 Bad Request\n",
        StatusCode::NOT_FOUND => "404 Not Found\n",
        StatusCode::REQUEST_TIMEOUT => "408 Request Timeout\n",
        StatusCode::METHOD_NOT_ALLOWED => "405 Method Not Allowed\n",
        StatusCode::BAD_GATEWAY => "502 Bad Gateway\n",
        StatusCode::SERVICE_UNAVAILABLE => "503 Service Unavailable\n",
        StatusCode::GATEWAY_TIMEOUT => "504 Gateway Timeout\n",
        _ => "error\n",
    }
}

impl std::fmt::Display for ProxyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProxyError::BadRequest(why) => f.write_str(why),
            ProxyError::BadBody(e) => write!(f, "request body: {e}"),
            ProxyError::BadRewrite => f.write_str("the rewritten path is not a valid target"),
            ProxyError::NotFound => f.write_str("no route"),
            ProxyError::ClientBodyTimeout => f.write_str("client read-timeout in the request body"),
            ProxyError::MethodNotAllowed => f.write_str("CONNECT is not proxied"),
            ProxyError::UnrequestedSwitch => {
                f.write_str("101 Switching Protocols to a request without a WebSocket upgrade")
            }
            ProxyError::NoConnection(n) => n.fmt(f),
            ProxyError::DownstreamClosed => f.write_str("every connection tried was closed"),
            ProxyError::DownstreamReadTimeout => f.write_str("downstream read-timeout"),
            ProxyError::DownstreamWriteTimeout => f.write_str("downstream write-timeout"),
            ProxyError::Downstream(what, None) => f.write_str(what),
            ProxyError::Downstream(what, Some(e)) => write!(f, "{what}: {e}"),
        }
    }
}

impl std::fmt::Display for NoConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NoConnection::AllDown => "every downstream is down",
            NoConnection::QueueFull => "max-pending requests already waiting",
            NoConnection::Timeout => "pending-timeout expired",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        let cases = [
            (ProxyError::BadRequest("x"), 400, true),
            (ProxyError::BadRewrite, 400, false),
            (ProxyError::NotFound, 404, false),
            (ProxyError::MethodNotAllowed, 405, false),
            (ProxyError::ClientBodyTimeout, 408, true),
            (ProxyError::UnrequestedSwitch, 502, false),
            (
                ProxyError::NoConnection(NoConnection::QueueFull),
                503,
                false,
            ),
            (ProxyError::DownstreamClosed, 502, false),
            (ProxyError::DownstreamReadTimeout, 504, false),
        ];
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        for (e, code, close) in cases {
            let r = e.into_response(peer, None);
            assert_eq!(r.status().as_u16(), code);
            assert_eq!(r.headers().contains_key(CONNECTION), close);
            assert_eq!(r.headers()[CONTENT_TYPE], "text/plain");
        }
    }
}
