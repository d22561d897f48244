//! SOCKS5 (RFC 1928) on the optional `egress.socks_listen`, for software that prefers
//! it to an HTTP proxy. Only `CONNECT`; names are passed on unresolved ("remote DNS",
//! like `socks5h://`), so the exit resolves them and no DNS query leaves this host.
//! When `egress.proxy_auth` is set, username/password (RFC 1929) is required.
//!
//! The same [`Egress::open`] as the HTTP listener decides: policy, then Tor, fail closed.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    sync::Arc,
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{
    Egress, EgressError, TorFailure,
    policy::{Destination, Host},
};
use crate::accept::Acceptor;

const MAX_CONNECTIONS: usize = 4096;
/// The whole handshake (greeting, auth, request) must arrive within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

const VERSION: u8 = 5;
const NO_AUTH: u8 = 0;
const USER_PASS: u8 = 2;
const NO_ACCEPTABLE: u8 = 0xFF;

// Reply codes (RFC 1928 §6).
const SUCCEEDED: u8 = 0;
const GENERAL_FAILURE: u8 = 1;
const NOT_ALLOWED: u8 = 2;
const HOST_UNREACHABLE: u8 = 4;
const CONNECTION_REFUSED: u8 = 5;
const TTL_EXPIRED: u8 = 6;
const COMMAND_NOT_SUPPORTED: u8 = 7;
const ADDRESS_NOT_SUPPORTED: u8 = 8;

pub async fn serve(egress: Arc<Egress>, listener: TcpListener, shutdown: CancellationToken) {
    let acceptor = Acceptor::new(listener, MAX_CONNECTIONS, "socks");
    let tasks = TaskTracker::new();
    while let Some((stream, _, permit)) = acceptor.next(&shutdown).await {
        let (egress, shutdown) = (egress.clone(), shutdown.clone());
        tasks.spawn(async move {
            tokio::select! {
                r = session(&egress, stream) => if let Err(e) = r { tracing::debug!(error = %e, "socks session ended") },
                _ = shutdown.cancelled() => {}
            }
            drop(permit);
        });
    }
    tasks.close();
    tasks.wait().await;
}

async fn session(egress: &Egress, mut client: TcpStream) -> std::io::Result<()> {
    let dest = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(egress, &mut client)).await {
        Ok(Ok(Some(dest))) => dest,
        Ok(Ok(None)) => return Ok(()),
        Ok(Err(e)) => return Err(e),
        Err(_) => return Ok(()),
    };
    match egress.open(&dest).await {
        Ok(mut upstream) => {
            reply(&mut client, SUCCEEDED).await?;
            tokio::io::copy_bidirectional(&mut client, &mut upstream).await.map(|_| ())
        }
        Err(e) => {
            tracing::debug!(error = %e, "socks connect refused or failed");
            reply(&mut client, reply_code(&e)).await
        }
    }
}

/// Reads greeting, optional credentials and the request. `None` when the session was
/// already answered (refused auth, bad command).
async fn handshake(egress: &Egress, client: &mut TcpStream) -> std::io::Result<Option<Destination>> {
    let mut head = [0u8; 2];
    client.read_exact(&mut head).await?;
    if head[0] != VERSION {
        return Ok(None);
    }
    let mut methods = vec![0u8; usize::from(head[1])];
    client.read_exact(&mut methods).await?;
    let wanted = if egress.requires_auth() { USER_PASS } else { NO_AUTH };
    if !methods.contains(&wanted) {
        client.write_all(&[VERSION, NO_ACCEPTABLE]).await?;
        egress.failed(EgressError::AuthRequired);
        return Ok(None);
    }
    client.write_all(&[VERSION, wanted]).await?;
    if wanted == USER_PASS {
        let mut ver_len = [0u8; 2];
        client.read_exact(&mut ver_len).await?;
        let mut user = vec![0u8; usize::from(ver_len[1])];
        client.read_exact(&mut user).await?;
        let mut plen = [0u8; 1];
        client.read_exact(&mut plen).await?;
        let mut pass = vec![0u8; usize::from(plen[0])];
        client.read_exact(&mut pass).await?;
        let mut cred = user;
        cred.push(b':');
        cred.extend_from_slice(&pass);
        use base64::Engine as _;
        let presented = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(&cred));
        if !egress.authorized(Some(presented.as_bytes())) {
            client.write_all(&[1, 1]).await?;
            egress.failed(EgressError::AuthRequired);
            return Ok(None);
        }
        client.write_all(&[1, 0]).await?;
    }

    let mut req = [0u8; 4];
    client.read_exact(&mut req).await?;
    let [ver, cmd, _reserved, atyp] = req;
    if ver != VERSION {
        return Ok(None);
    }
    let host = match atyp {
        1 => {
            let mut b = [0u8; 4];
            client.read_exact(&mut b).await?;
            Host::Ip(Ipv4Addr::from(b).into())
        }
        3 => {
            let mut len = [0u8; 1];
            client.read_exact(&mut len).await?;
            let mut name = vec![0u8; usize::from(len[0])];
            client.read_exact(&mut name).await?;
            match std::str::from_utf8(&name).ok().and_then(|n| Host::parse(n).ok()) {
                Some(h) => h,
                None => {
                    egress.failed(EgressError::BadRequest("bad SOCKS host name".into()));
                    reply(client, ADDRESS_NOT_SUPPORTED).await?;
                    return Ok(None);
                }
            }
        }
        4 => {
            let mut b = [0u8; 16];
            client.read_exact(&mut b).await?;
            Host::Ip(Ipv6Addr::from(b).into())
        }
        _ => {
            reply(client, ADDRESS_NOT_SUPPORTED).await?;
            return Ok(None);
        }
    };
    let mut port = [0u8; 2];
    client.read_exact(&mut port).await?;
    let port = u16::from_be_bytes(port);
    if cmd != 1 {
        egress.failed(EgressError::BadRequest("only SOCKS CONNECT is supported".into()));
        reply(client, COMMAND_NOT_SUPPORTED).await?;
        return Ok(None);
    }
    if port == 0 {
        reply(client, ADDRESS_NOT_SUPPORTED).await?;
        return Ok(None);
    }
    Ok(Some(Destination { host, port }))
}

fn reply_code(e: &EgressError) -> u8 {
    match e {
        EgressError::Refused(_) | EgressError::AuthRequired => NOT_ALLOWED,
        EgressError::Tor { failure, .. } => match failure {
            TorFailure::Refused => CONNECTION_REFUSED,
            TorFailure::Timeout => TTL_EXPIRED,
            TorFailure::NotFound | TorFailure::Onion => HOST_UNREACHABLE,
            TorFailure::Rejected => NOT_ALLOWED,
            TorFailure::Other => GENERAL_FAILURE,
        },
        _ => GENERAL_FAILURE,
    }
}

/// A reply with an all-zero bound address: where the stream leaves Tor is not ours to tell.
async fn reply(client: &mut TcpStream, code: u8) -> std::io::Result<()> {
    client.write_all(&[VERSION, code, 0, 1, 0, 0, 0, 0, 0, 0]).await
}
