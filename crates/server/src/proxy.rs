//! A minimal HTTP CONNECT proxy so that clients with no DNS for Coffer's host names
//! (`{vault}.vault.{suffix}`, `{account}.blob.{suffix}`) reach them with
//! `HTTPS_PROXY=http://127.0.0.1:PORT`. It routes by the requested host to the matching
//! listener and refuses every other host (403), so it can never be used to reach anything
//! but this server. TLS stays end to end between the client and the listener.
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const MAX_HEADER: usize = 8 * 1024;
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct ProxyRoutes {
    pub dns_suffix: String,
    pub public_host: String,
    pub main: SocketAddr,
    pub blob: SocketAddr,
    pub main_port: u16,
    pub blob_port: u16,
}

impl ProxyRoutes {
    /// Where a `CONNECT host:port` goes, if anywhere.
    pub fn route(&self, authority: &str) -> Option<SocketAddr> {
        let (host, port) = authority.rsplit_once(':')?;
        let port: u16 = port.parse().ok()?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let is_sub = |label: &str| {
            let suffix = format!(".{label}.{}", self.dns_suffix);
            host.len() > suffix.len()
                && host.ends_with(&suffix)
                && !host[..host.len() - suffix.len()].contains('.')
        };
        let bare =
            host == "localhost" || host == "127.0.0.1" || host == "::1" || host == self.public_host;
        if (is_sub("vault") || host == format!("vault.{}", self.dns_suffix))
            && (port == self.main_port || port == 443)
        {
            return Some(self.main);
        }
        if is_sub("blob") && (port == self.blob_port || port == 443) {
            return Some(self.blob);
        }
        if bare && port == self.main_port {
            return Some(self.main);
        }
        if bare && port == self.blob_port {
            return Some(self.blob);
        }
        None
    }
}

pub async fn serve(
    listener: TcpListener,
    routes: ProxyRoutes,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (conn, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(_) => continue,
            },
            _ = shutdown.changed() => break,
        };
        let routes = routes.clone();
        let mut sd = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                r = handle(conn, &routes) => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "proxy connection ended");
                    }
                }
                _ = sd.changed() => {}
            }
        });
    }
}

async fn read_head(conn: &mut TcpStream) -> std::io::Result<(String, Vec<u8>)> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..pos]).into_owned();
            return Ok((head, buf[pos + 4..].to_vec()));
        }
        if buf.len() > MAX_HEADER {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "header too large",
            ));
        }
    }
}

async fn reply(conn: &mut TcpStream, status: &str) -> std::io::Result<()> {
    conn.write_all(
        format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
}

async fn handle(mut conn: TcpStream, routes: &ProxyRoutes) -> std::io::Result<()> {
    let (head, rest) = match tokio::time::timeout(HEADER_TIMEOUT, read_head(&mut conn)).await {
        Ok(Ok(x)) => x,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
            return reply(&mut conn, "431 Request Header Fields Too Large").await;
        }
        Ok(Err(e)) => return Err(e),
        Err(_) => return reply(&mut conn, "408 Request Timeout").await,
    };
    let line = head.lines().next().unwrap_or_default();
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return reply(&mut conn, "400 Bad Request").await;
    };
    if !version.starts_with("HTTP/1.") {
        return reply(&mut conn, "400 Bad Request").await;
    }
    if method != "CONNECT" {
        return reply(&mut conn, "405 Method Not Allowed").await;
    }
    let Some(dest) = routes.route(target) else {
        tracing::info!(target, "proxy refused a host this server does not serve");
        return reply(&mut conn, "403 Forbidden").await;
    };
    let mut upstream = match TcpStream::connect(dest).await {
        Ok(u) => u,
        Err(_) => return reply(&mut conn, "502 Bad Gateway").await,
    };
    let _ = upstream.set_nodelay(true);
    conn.write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        .await?;
    if !rest.is_empty() {
        upstream.write_all(&rest).await?;
    }
    tokio::io::copy_bidirectional(&mut conn, &mut upstream).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_only_our_hosts() {
        let r = ProxyRoutes {
            dns_suffix: "coffer.internal".into(),
            public_host: "127.0.0.1".into(),
            main: SocketAddr::from(([127, 0, 0, 1], 1000)),
            blob: SocketAddr::from(([127, 0, 0, 1], 2000)),
            main_port: 1000,
            blob_port: 2000,
        };
        assert_eq!(r.route("kv1.vault.coffer.internal:1000"), Some(r.main));
        assert_eq!(r.route("kv1.vault.coffer.internal:443"), Some(r.main));
        assert_eq!(r.route("acct.blob.coffer.internal:2000"), Some(r.blob));
        assert_eq!(r.route("127.0.0.1:1000"), Some(r.main));
        assert_eq!(r.route("127.0.0.1:22"), None);
        assert_eq!(r.route("example.com:443"), None);
        assert_eq!(r.route("a.b.vault.coffer.internal:1000"), None);
        assert_eq!(r.route("kv1.vault.coffer.internal.evil.com:1000"), None);
        assert_eq!(r.route("nonsense"), None);
    }
}
