//! A minimal HTTP/1.1 client and app for end-to-end tests: requests from a chosen loopback
//! source address (so one machine looks like many clients), and an app that echoes the
//! request head it received.

use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket};

/// Sends `GET path` with `headers` from source address `from` to `to`; returns the status
/// and the body (the connection is closed after one exchange).
pub async fn get(
    from: IpAddr,
    to: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, String), String> {
    let sock = if to.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|e| e.to_string())?;
    sock.bind(SocketAddr::new(from, 0))
        .map_err(|e| format!("bind {from}: {e}"))?;
    let mut s = sock
        .connect(to)
        .await
        .map_err(|e| format!("connect {to}: {e}"))?;
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: api.example\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or(format!("bad response {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Starts an app on 127.0.0.1 that answers every request with 200 and the request head it
/// received as the body; returns its port.
pub async fn echo_app() -> u16 {
    app(|head| (200, head.to_owned())).await
}

/// Starts an app on 127.0.0.1 that answers each request with the status and body `answer`
/// gives for the request head it received; returns its port.
pub async fn app(answer: impl Fn(&str) -> (u16, String) + Send + Sync + 'static) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind app");
    let port = l.local_addr().expect("addr").port();
    let answer = std::sync::Arc::new(answer);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                let mut got = 0;
                while got < buf.len() {
                    match s.read(&mut buf[got..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got += n,
                    }
                    if buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                let head = String::from_utf8_lossy(&buf[..got]).into_owned();
                let (status, body) = answer(&head);
                let reason = if status == 200 { "OK" } else { "Answer" };
                let resp = format!(
                    "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    port
}
