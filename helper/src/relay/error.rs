//! Why a proxy could not carry a flow: the proxy's own fault (down,
//! misconfigured, wrong credentials), or a refusal of the one destination.

use std::io;

use super::socks5::ReplyCode;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("the SOCKS5 server accepts neither no authentication nor a user name and password; check the server's configuration")]
    NoAcceptableMethod,
    #[error("the SOCKS5 server asks for a user name and password; give them in the upstream URL (socks5://user:pass@host:port)")]
    PasswordRequired,
    #[error("the SOCKS5 server rejected the user name and password (status {0}); check them in the upstream URL")]
    AuthRejected(u8),
    #[error("the SOCKS5 server refused: {0}")]
    Refused(ReplyCode),
    #[error("the SOCKS5 server broke the protocol: {0}")]
    Protocol(&'static str),
    #[error("the HTTP proxy asks for a user name and password; give them in the upstream URL (http://user:pass@host:port)")]
    HttpPasswordRequired,
    #[error("the HTTP proxy rejected the user name and password; check them in the upstream URL")]
    HttpAuthRejected,
    /// A status other than 2xx and 407: the status and the proxy's reason
    /// phrase, cut short.
    #[error("the HTTP proxy answered {0} {1}")]
    HttpStatus(u16, String),
    #[error("the HTTP proxy broke the protocol: {0}")]
    HttpProtocol(&'static str),
}

impl UpstreamError {
    /// Whether the proxy itself is at fault (down, misconfigured, wrong
    /// credentials) rather than the one destination it was asked for. An
    /// HTTP proxy that answers 400, 405 or 501 to CONNECT does not do
    /// CONNECT at all.
    pub fn is_upstream_fault(&self) -> bool {
        match self {
            UpstreamError::Refused(_) => false,
            UpstreamError::HttpStatus(code, _) => matches!(code, 400 | 405 | 501),
            _ => true,
        }
    }

    /// What a UDP client is told when its flow fails for this reason: port
    /// unreachable when the destination refused, otherwise administratively
    /// prohibited (the proxy could not or would not carry it). Both are
    /// codes a socket reports at once; host unreachable would be truer for
    /// some replies, but Linux shows it only to sockets that ask for errors.
    pub fn unreachable(&self) -> ztun_engine::Unreachable {
        match self {
            UpstreamError::Refused(ReplyCode::ConnectionRefused) => ztun_engine::Unreachable::Port,
            _ => ztun_engine::Unreachable::Prohibited,
        }
    }

    /// The counter key `status` shows refused flows under.
    pub fn reason(&self) -> &'static str {
        match self {
            UpstreamError::Io(e) if e.kind() == io::ErrorKind::TimedOut => "upstream_timeout",
            UpstreamError::Io(_) => "upstream_unreachable",
            UpstreamError::NoAcceptableMethod
            | UpstreamError::PasswordRequired
            | UpstreamError::HttpPasswordRequired => "auth_method",
            UpstreamError::AuthRejected(_) | UpstreamError::HttpAuthRejected => "auth_rejected",
            UpstreamError::Refused(code) => code.as_str(),
            UpstreamError::Protocol(_) | UpstreamError::HttpProtocol(_) => "protocol_error",
            UpstreamError::HttpStatus(code, _) => match code {
                403 => "http_403",
                404 => "http_404",
                500 => "http_500",
                502 => "http_502",
                503 => "http_503",
                504 => "http_504",
                400 | 405 | 501 => "http_no_connect",
                _ => "http_other",
            },
        }
    }
}
