//! A minimal HTTP/1.1 client for WHEP signalling: one request per connection (`Connection:
//! close`), the answer read to its end (Content-Length, chunked, or close). Only what
//! `POST /whep/<channel>` and `DELETE <Location>` need; every step is bounded by the caller's
//! timeout.

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Where the WHEP endpoint is: `http://HOST:PORT/PATH`.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// `HOST:PORT`, as connected to and sent in `Host`.
    pub authority: String,
    /// The request target, starting with `/`.
    pub path: String,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Endpoint> {
        let rest = url.strip_prefix("http://").ok_or_else(|| anyhow!("only http:// URLs: {url}"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if !authority.contains(':') {
            bail!("the URL needs an explicit port: {url}");
        }
        Ok(Endpoint { authority: authority.to_owned(), path: path.to_owned() })
    }

    /// The same server, another path (a `Location` that is a path, or an absolute http URL).
    pub fn resolve(&self, location: &str) -> Result<Endpoint> {
        if location.starts_with("http://") {
            return Endpoint::parse(location);
        }
        if !location.starts_with('/') {
            bail!("relative Location not understood: {location}");
        }
        Ok(Endpoint { authority: self.authority.clone(), path: location.to_owned() })
    }
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// One request; `body` with its content type, or none.
pub async fn request(
    ep: &Endpoint,
    method: &str,
    extra_headers: &[(&str, &str)],
    body: Option<(&str, &[u8])>,
) -> Result<Response> {
    let mut stream =
        TcpStream::connect(&ep.authority).await.with_context(|| format!("connect {}", ep.authority))?;
    let _ = stream.set_nodelay(true);
    let mut req = format!("{method} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n", ep.path, ep.authority);
    for (k, v) in extra_headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    match body {
        Some((ctype, b)) => {
            req.push_str(&format!("Content-Type: {ctype}\r\nContent-Length: {}\r\n\r\n", b.len()))
        }
        None => req.push_str("Content-Length: 0\r\n\r\n"),
    }
    let mut out = req.into_bytes();
    if let Some((_, b)) = body {
        out.extend_from_slice(b);
    }
    stream.write_all(&out).await.context("sending the request")?;

    // Read the head.
    let mut buf = Vec::with_capacity(4096);
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i;
        }
        if buf.len() > 64 * 1024 {
            bail!("response head over 64 KiB");
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.context("reading the response")?;
        if n == 0 {
            bail!("connection closed before the response head");
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..head_end]).context("response head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line: {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut rest = buf[head_end + 4..].to_vec();
    let get = |name: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone());
    let chunked = get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let length: Option<usize> = get("content-length").and_then(|v| v.parse().ok());

    // Read the body.
    let mut chunk = [0u8; 8192];
    if method != "HEAD" && status != 204 && status != 304 {
        match length {
            Some(len) if !chunked => {
                while rest.len() < len {
                    let n = stream.read(&mut chunk).await?;
                    if n == 0 {
                        bail!("connection closed in the body ({} of {len} bytes)", rest.len());
                    }
                    rest.extend_from_slice(&chunk[..n]);
                }
                rest.truncate(len);
            }
            _ => {
                // Chunked or close-delimited: read to the end (we asked for Connection: close).
                loop {
                    if rest.len() > 1 << 20 {
                        bail!("response body over 1 MiB");
                    }
                    let n = stream.read(&mut chunk).await?;
                    if n == 0 {
                        break;
                    }
                    rest.extend_from_slice(&chunk[..n]);
                }
                if chunked {
                    rest = dechunk(&rest)?;
                }
            }
        }
    } else {
        rest.clear();
    }
    Ok(Response { status, headers, body: rest })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn dechunk(mut b: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let i = find(b, b"\r\n").ok_or_else(|| anyhow!("chunked body: no size line"))?;
        let size_str = std::str::from_utf8(&b[..i])?.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_str, 16).context("chunk size")?;
        b = &b[i + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size + 2 {
            bail!("chunked body: truncated chunk");
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}
