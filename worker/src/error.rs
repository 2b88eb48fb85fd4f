//! Every way a request can fail in a worker, and the one place that turns a failure into the
//! status of DESIGN section 8 (400/404/405/408/502/503/504) and into rproxy's own response. The stages only say what went
//! wrong; none of them picks a status.

use std::net::SocketAddr;

use http::header::{CONNECTION, CONTENT_TYPE};
use http::{HeaderValue, Response, StatusCode};

use crate::body::{ClientBodyTimeout, ProxyBody};
use crate::pool::NoConnection;

/// Why rproxy answers a request itself instead of with a downstream's response.
#[derive(Debug)]
pub enum ProxyError {
    /// Framing hyper accepts but a proxy must not forward; the connection closes after it.
    BadRequest(&'static str),
    /// The first chunk of a chunked body is malformed; the connection closes after it.
    BadBody(hyper::Error),
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
    DownstreamWriteTimeout(hyper::Error),
    /// The chosen connection was refused, reset, closed before a response, or answered with
    /// something that is not HTTP.
    Downstream(hyper::Error),
    /// `101 Switching Protocols` to a request that asked for no (WebSocket) upgrade: the
    /// connection would become a tunnel the client never negotiated.
    UnrequestedSwitch,
}

impl ProxyError {
    /// A failed exchange with a downstream: a write that timed out (`TimedIo`, somewhere in the
    /// error's sources) is RProxy's 503, a client that stalled its body 408, everything else a
    /// 502.
    pub fn downstream(e: hyper::Error) -> ProxyError {
        let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&e);
        while let Some(s) = src {
            if s.is::<ClientBodyTimeout>() {
                return ProxyError::ClientBodyTimeout;
            }
            if let Some(io) = s.downcast_ref::<std::io::Error>() {
                if io.kind() == std::io::ErrorKind::TimedOut {
                    return ProxyError::DownstreamWriteTimeout(e);
                }
            }
            src = s.source();
        }
        ProxyError::Downstream(e)
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
            ProxyError::NoConnection(_) | ProxyError::DownstreamWriteTimeout(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::DownstreamClosed
            | ProxyError::Downstream(_)
            | ProxyError::UnrequestedSwitch => StatusCode::BAD_GATEWAY,
            ProxyError::DownstreamReadTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// Whether the client connection must end with this response: after a request whose
    /// framing we refused, the rest of the stream cannot be trusted.
    fn closes(&self) -> bool {
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

fn text(code: StatusCode) -> &'static str {
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
            ProxyError::BadBody(e) => write!(f, "first chunk: {e}"),
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
            ProxyError::DownstreamWriteTimeout(e) | ProxyError::Downstream(e) => e.fmt(f),
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
