//! A lean HTTP/1.1 GET client for the load generator: plain tokio `TcpStream`s, one small pool
//! of keep-alive connections per player, a hand-written response parser.
//!
//! Why not hyper: `hyper-util`'s pooled legacy client cost ~66 us of CPU per small playlist
//! request, more than the server it measured (~41 us), on the 2 cores both share. This client
//! only does what a player of one known server needs, and does it correctly:
//!
//! - Requests are `GET <path?query> HTTP/1.1` + `Host`, written with one write; no pipelining
//!   (one request in flight per connection), so everything read after a request belongs to its
//!   response.
//! - Responses: status line, headers (names case-insensitive), then a body framed by
//!   `Content-Length` or `Transfer-Encoding: chunked` (trailers read and ignored); 204 and 304
//!   have no body; 1xx interim responses (except 101) are skipped. A body delimited by the
//!   server closing the connection (neither header) is refused with an error, as are
//!   `Content-Length` together with `Transfer-Encoding`, conflicting `Content-Length`s, other
//!   transfer codings and malformed status or header lines.
//! - The connection goes back to the player's pool after a complete response unless the server
//!   said `Connection: close` (or answered HTTP/1.0 without `keep-alive`); after any error it is
//!   dropped. Idle connections are dropped after `IDLE_LIMIT`.
//! - A request on a *reused* idle connection that fails before any response byte arrived (the
//!   server closed the idle connection, possibly while we wrote) is retried once on a fresh
//!   connection, as HTTP clients do for idempotent requests. Timeouts are never retried.
//! - Bodies nobody keeps are only counted: socket reads go into one 64 KiB scratch buffer per
//!   worker thread (never held across an `.await`); kept bodies (playlists) are appended to one
//!   `Vec` sized by `Content-Length`.
//! - Every socket has `SO_TIMESTAMPNS` on and is read with `recvmsg`, so a reply carries the
//!   kernel's receive time of its first bytes (`Reply::arrived`): when the answer reached this
//!   machine's socket, whatever the player task was doing then. On one machine shared by the
//!   server and ~1,000 players, a task may read its answer tens of milliseconds after it
//!   arrived, while the same two cores read other players' part bodies.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Result};
use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags};
use nix::sys::time::TimeSpec;
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Idle connections older than this are closed instead of reused: below actix-web's default
/// 5 s keep-alive, so a server with that default rarely closes one just as we write on it (the
/// retry covers the rest).
const IDLE_LIMIT: Duration = Duration::from_secs(3);
/// Socket read buffer per worker thread, for every response byte.
const SCRATCH: usize = 64 * 1024;
/// Longest response head (status line + headers) accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Pre-allocation cap for a kept body (it may still grow beyond, up to its length).
const MAX_RESERVE: u64 = 4 * 1024 * 1024;

thread_local! {
    static SCRATCH_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH].into_boxed_slice());
    /// Control-message space for one receive timestamp.
    static CMSG_BUF: RefCell<Vec<u8>> = RefCell::new(nix::cmsg_space!(TimeSpec));
}

/// Where the requests go: one server, `http://` only.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// The URL's authority as written (`host[:port]`), for the `Host` header.
    pub host: String,
}

impl Target {
    /// Split `http://host[:port]/path?query` into the target and the request path (`/` when
    /// the URL has none), resolving the host once.
    pub async fn from_url(url: &str) -> Result<(Target, String)> {
        let rest = url.strip_prefix("http://").ok_or_else(|| anyhow!("not an http:// URL: {url}"))?;
        let (host, path) = split_authority(rest);
        if host.is_empty() || host.contains('@') {
            bail!("bad host in URL {url}");
        }
        let with_port = if host.rsplit_once(':').is_some_and(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
            && !host.ends_with(']')
        {
            host.to_string()
        } else {
            format!("{host}:80")
        };
        let addr = tokio::net::lookup_host(&with_port)
            .await
            .map_err(|e| anyhow!("resolving {with_port}: {e}"))?
            .next()
            .ok_or_else(|| anyhow!("{with_port} resolves to no address"))?;
        Ok((Target { addr, host: host.to_string() }, path.to_string()))
    }
}

/// `host[:port]/path?q` -> (`host[:port]`, `/path?q`); the path is `/` when absent.
pub fn split_authority(rest: &str) -> (&str, &str) {
    match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], &rest[i..]),
        Some(i) => (&rest[..i], "/"), // "host?q" is not something we are given
        None => (rest, "/"),
    }
}

struct Conn {
    stream: TcpStream,
    /// Request bytes, then the response head; reused for every request on this connection.
    buf: Vec<u8>,
    idle_since: Instant,
}

/// One player's idle keep-alive connections (its playlist loop and its part tasks share them).
#[derive(Default)]
pub struct Pool {
    /// Pushed in the order they became idle, so the last is the newest.
    idle: Mutex<Vec<Conn>>,
}

impl Pool {
    fn take(&self) -> Option<Conn> {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let c = idle.pop()?;
        if now.duration_since(c.idle_since) < IDLE_LIMIT {
            return Some(c);
        }
        // The newest idle connection is too old, so are all the others.
        idle.clear();
        None
    }

    fn put(&self, mut c: Conn) {
        c.idle_since = Instant::now();
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).push(c);
    }
}

/// A complete response.
#[derive(Debug, Clone, Copy)]
pub struct Reply {
    pub status: u16,
    /// Body bytes (after de-chunking).
    pub bytes: usize,
    /// The kernel's receive time of the first response bytes (`None` if it gave none).
    pub arrived: Option<SystemTime>,
}

/// GET `path` (absolute path + query) from `target`, on a connection from `pool` or a new one.
/// Everything (connecting, writing, headers, body) must finish by `deadline`. The body is
/// appended to `out` when given, otherwise only counted.
pub async fn get(
    target: &Target,
    pool: &Pool,
    path: &str,
    out: Option<&mut Vec<u8>>,
    deadline: Instant,
    timeout: Duration,
) -> Result<Reply> {
    get_with(target, pool, path, "", out, deadline, timeout).await
}

/// `get` with extra request header lines (`extra`: zero or more `Name: value\r\n`, e.g. a
/// `Range`), written between `Host` and the blank line.
pub async fn get_with(
    target: &Target,
    pool: &Pool,
    path: &str,
    extra: &str,
    mut out: Option<&mut Vec<u8>>,
    deadline: Instant,
    timeout: Duration,
) -> Result<Reply> {
    let got_head = AtomicBool::new(false); // only for the timeout's message
    let attempt = async {
        let mut retried = false;
        loop {
            // A retry always gets a fresh connection.
            let idle = if retried { None } else { pool.take() };
            let (mut conn, reused) = match idle {
                Some(c) => (c, true),
                None => (connect(target.addr).await?, false),
            };
            match exchange(&mut conn, &target.host, path, extra, out.as_deref_mut(), &got_head).await {
                Ok((reply, keep_alive)) => {
                    if keep_alive {
                        pool.put(conn);
                    }
                    return Ok(reply);
                }
                Err(Failure { error, nothing_received }) => {
                    if reused && nothing_received && !retried {
                        retried = true;
                        if let Some(o) = out.as_deref_mut() {
                            o.clear();
                        }
                        continue;
                    }
                    return Err(error);
                }
            }
        }
    };
    match tokio::time::timeout_at(deadline, attempt).await {
        Ok(r) => r,
        Err(_) if got_head.load(Relaxed) => Err(anyhow!("body not complete in {timeout:?}")),
        Err(_) => Err(anyhow!("no response headers in {timeout:?}")),
    }
}

async fn connect(addr: SocketAddr) -> Result<Conn> {
    let stream = TcpStream::connect(addr).await.map_err(|e| anyhow!("connect {addr}: {e}"))?;
    stream.set_nodelay(true)?;
    setsockopt(&stream, sockopt::ReceiveTimestampns, &true).map_err(|e| anyhow!("SO_TIMESTAMPNS: {e}"))?;
    Ok(Conn { stream, buf: Vec::with_capacity(512), idle_since: Instant::now() })
}

struct Failure {
    error: anyhow::Error,
    /// No response byte arrived on the connection (the request may be retried if it was reused).
    nothing_received: bool,
}

/// One request/response on `conn`; returns the reply and whether the connection may be reused.
async fn exchange(
    conn: &mut Conn,
    host: &str,
    path: &str,
    extra: &str,
    mut out: Option<&mut Vec<u8>>,
    got_head: &AtomicBool,
) -> std::result::Result<(Reply, bool), Failure> {
    let Conn { stream, buf, .. } = conn;
    if !path.starts_with('/') {
        let error = anyhow!("only URLs on the playlist's host are supported, not {path}");
        return Err(Failure { error, nothing_received: false });
    }
    buf.clear();
    for piece in [
        b"GET ",
        path.as_bytes(),
        b" HTTP/1.1\r\nHost: ",
        host.as_bytes(),
        b"\r\n",
        extra.as_bytes(),
        b"\r\n",
    ] {
        buf.extend_from_slice(piece);
    }
    if let Err(e) = stream.write_all(&buf[..]).await {
        return Err(Failure { error: anyhow!("writing the request: {e}"), nothing_received: true });
    }
    let mut parser = Parser::new(buf);
    let mut received = false;
    let mut arrived = None;
    loop {
        let fail = |received: bool, error: anyhow::Error| Failure { error, nothing_received: !received };
        if let Err(e) = stream.readable().await {
            return Err(fail(received, anyhow!("reading the response: {e}")));
        }
        let step = SCRATCH_BUF.with_borrow_mut(|scratch| {
            let want = parser.want().min(scratch.len());
            match read_stamped(stream, &mut scratch[..want]) {
                Ok((0, _)) if received => Err(anyhow!("connection closed by the server mid-response")),
                Ok((0, _)) => Err(anyhow!("connection closed by the server before any response byte")),
                Ok((n, at)) => {
                    if !received {
                        arrived = at;
                    }
                    received = true;
                    parser.feed(&scratch[..n], out.as_deref_mut()).map(Some)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
                Err(e) => Err(anyhow!("reading the response: {e}")),
            }
        });
        match step {
            Ok(Some(true)) => {
                let head = parser.head.expect("a finished response has a head");
                let reply = Reply { status: head.status, bytes: parser.body_len, arrived };
                return Ok((reply, head.keep_alive));
            }
            Ok(Some(false)) => got_head.store(parser.head.is_some(), Relaxed),
            Ok(None) => {}
            Err(e) => return Err(fail(received, e)),
        }
    }
}

/// One non-blocking read, with the kernel's receive time of the newest data it returned (the
/// socket has `SO_TIMESTAMPNS` on; for TCP the kernel reports the last segment read).
fn read_stamped(stream: &TcpStream, buf: &mut [u8]) -> io::Result<(usize, Option<SystemTime>)> {
    stream.try_io(Interest::READABLE, || {
        CMSG_BUF.with_borrow_mut(|cmsg| {
            let mut iov = [io::IoSliceMut::new(buf)];
            let msg = recvmsg::<()>(stream.as_raw_fd(), &mut iov, Some(&mut cmsg[..]), MsgFlags::empty())
                .map_err(io::Error::from)?;
            let at = msg.cmsgs().ok().and_then(|mut c| {
                c.find_map(|m| match m {
                    ControlMessageOwned::ScmTimestampns(ts) => {
                        Some(UNIX_EPOCH + Duration::new(ts.tv_sec() as u64, ts.tv_nsec() as u32))
                    }
                    _ => None,
                })
            });
            Ok((msg.bytes, at))
        })
    })
}

// --- response parser -----------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (204, 304, or `Content-Length: 0`).
    Empty,
    Length(u64),
    Chunked,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub framing: Framing,
    /// The connection may carry another request after this response.
    pub keep_alive: bool,
}

/// Parse a complete response head (status line and header lines, without the final blank
/// line's CRLF pair; `head` ends with the last header line's CRLF or the status line's).
pub fn parse_head(head: &[u8]) -> Result<Head> {
    let mut lines = head.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let status_line = lines.next().unwrap_or_default();
    let show = |l: &[u8]| String::from_utf8_lossy(&l[..l.len().min(80)]).into_owned();
    // "HTTP/1.x SSS[ reason]"
    let (version, status) = match status_line {
        [b'H', b'T', b'T', b'P', b'/', b'1', b'.', v @ b'0'..=b'9', b' ', s1, s2, s3, rest @ ..]
            if [s1, s2, s3].iter().all(|b| b.is_ascii_digit()) && (rest.is_empty() || rest[0] == b' ') =>
        {
            (*v - b'0', (*s1 - b'0') as u16 * 100 + (*s2 - b'0') as u16 * 10 + (*s3 - b'0') as u16)
        }
        _ => bail!("malformed status line: {:?}", show(status_line)),
    };
    if status < 100 {
        bail!("malformed status line: {:?}", show(status_line));
    }
    let mut length: Option<u64> = None;
    let mut chunked = None;
    let (mut close, mut keep) = (false, false);
    for line in lines {
        if line.is_empty() {
            continue; // the trailing CRLF of the last header line
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            bail!("malformed header line: {:?}", show(line));
        };
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        if name.is_empty() || name.iter().any(|b| b.is_ascii_whitespace()) {
            bail!("malformed header line: {:?}", show(line));
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = std::str::from_utf8(value)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| anyhow!("bad Content-Length: {:?}", show(value)))?;
            if length.is_some_and(|l| l != n) {
                bail!("conflicting Content-Length headers");
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            let last = value.split(|&b| b == b',').map(trim).next_back().unwrap_or_default();
            chunked = Some(last.eq_ignore_ascii_case(b"chunked"));
            if chunked == Some(false) {
                bail!("unsupported Transfer-Encoding: {:?}", show(value));
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            for t in value.split(|&b| b == b',').map(trim) {
                close |= t.eq_ignore_ascii_case(b"close");
                keep |= t.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    let keep_alive = !close && (version >= 1 || keep);
    let framing = if (100..200).contains(&status) || status == 204 || status == 304 {
        Framing::Empty
    } else {
        match (length, chunked) {
            (Some(_), Some(_)) => bail!("both Content-Length and Transfer-Encoding (refused)"),
            (None, Some(_)) => Framing::Chunked,
            (Some(0), None) => Framing::Empty,
            (Some(n), None) => Framing::Length(n),
            (None, None) => bail!(
                "HTTP {status} without Content-Length or chunked Transfer-Encoding (a body delimited \
                 by connection close is not supported)"
            ),
        }
    };
    Ok(Head { status, framing, keep_alive })
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// Collecting the head; `matched` bytes of "\r\n\r\n" seen at its end so far.
    Head {
        matched: u8,
    },
    Length(u64),
    /// Chunk-size line: value so far, hex digits seen, in an extension / whitespace, CR seen.
    ChunkSize {
        value: u64,
        digits: u8,
        tail: bool,
        cr: bool,
    },
    ChunkData(u64),
    /// The CRLF after a chunk's data: CR seen.
    ChunkEnd {
        cr: bool,
    },
    /// Trailer lines after the last chunk: bytes in the current line, CR seen.
    Trailer {
        line: usize,
        cr: bool,
    },
    Done,
}

/// Incremental response parser: feed it the bytes read from the connection, in any split.
pub struct Parser<'a> {
    /// Head bytes so far (reused buffer; cleared on creation).
    buf: &'a mut Vec<u8>,
    state: State,
    pub head: Option<Head>,
    /// Body bytes so far.
    pub body_len: usize,
}

impl<'a> Parser<'a> {
    pub fn new(buf: &'a mut Vec<u8>) -> Self {
        buf.clear();
        Parser { buf, state: State::Head { matched: 0 }, head: None, body_len: 0 }
    }

    /// At most this many bytes may be read next (never past the end of a `Content-Length`
    /// body; elsewhere nothing is expected after the response anyway).
    pub fn want(&self) -> usize {
        match self.state {
            State::Length(n) => n.try_into().unwrap_or(usize::MAX),
            State::Done => 0,
            _ => usize::MAX,
        }
    }

    /// Consume `input`; body bytes are appended to `out` when given. Returns whether the
    /// response is complete. Bytes beyond its end are an error.
    pub fn feed(&mut self, mut input: &[u8], mut out: Option<&mut Vec<u8>>) -> Result<bool> {
        while !input.is_empty() {
            match &mut self.state {
                State::Done => bail!("{} unexpected bytes after the response", input.len()),
                State::Head { matched } => {
                    const END: &[u8; 4] = b"\r\n\r\n";
                    let mut m = *matched;
                    let mut used = input.len();
                    for (i, &b) in input.iter().enumerate() {
                        m = if b == END[m as usize] { m + 1 } else { u8::from(b == b'\r') };
                        if m == 4 {
                            used = i + 1;
                            break;
                        }
                    }
                    if self.buf.len() + used > MAX_HEAD {
                        bail!("response head longer than {MAX_HEAD} bytes");
                    }
                    self.buf.extend_from_slice(&input[..used]);
                    input = &input[used..];
                    if m < 4 {
                        self.state = State::Head { matched: m };
                        continue;
                    }
                    let head = parse_head(&self.buf[..self.buf.len() - 2])?;
                    self.buf.clear();
                    if (100..200).contains(&head.status) {
                        if head.status == 101 {
                            bail!("unexpected 101 Switching Protocols");
                        }
                        self.state = State::Head { matched: 0 }; // interim response: skip it
                        continue;
                    }
                    self.state = match head.framing {
                        Framing::Empty => State::Done,
                        Framing::Length(n) => {
                            if let Some(o) = out.as_deref_mut() {
                                o.reserve(n.min(MAX_RESERVE) as usize);
                            }
                            State::Length(n)
                        }
                        Framing::Chunked => State::ChunkSize { value: 0, digits: 0, tail: false, cr: false },
                    };
                    self.head = Some(head);
                }
                State::Length(left) => {
                    let n = input.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                    *left -= n as u64;
                    if *left == 0 {
                        self.state = State::Done;
                    }
                    self.take_body(&input[..n], out.as_deref_mut());
                    input = &input[n..];
                }
                State::ChunkData(left) => {
                    let n = input.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                    *left -= n as u64;
                    if *left == 0 {
                        self.state = State::ChunkEnd { cr: false };
                    }
                    self.take_body(&input[..n], out.as_deref_mut());
                    input = &input[n..];
                }
                State::ChunkSize { value, digits, tail, cr } => {
                    let b = input[0];
                    input = &input[1..];
                    if *cr {
                        if b != b'\n' {
                            bail!("malformed chunk size line (CR without LF)");
                        }
                        if *digits == 0 {
                            bail!("malformed chunk size line (no size)");
                        }
                        self.state = if *value == 0 {
                            State::Trailer { line: 0, cr: false }
                        } else {
                            State::ChunkData(*value)
                        };
                    } else if b == b'\r' {
                        *cr = true;
                    } else if *tail {
                        // chunk extension or whitespace before CRLF: ignored
                        if b == b'\n' {
                            bail!("malformed chunk size line (LF without CR)");
                        }
                    } else if let Some(d) = (b as char).to_digit(16) {
                        if *digits >= 15 {
                            bail!("chunk size too large");
                        }
                        *value = *value * 16 + u64::from(d);
                        *digits += 1;
                    } else if matches!(b, b';' | b' ' | b'\t') && *digits > 0 {
                        *tail = true;
                    } else {
                        bail!("malformed chunk size line (byte {b:#04x})");
                    }
                }
                State::ChunkEnd { cr } => {
                    let b = input[0];
                    input = &input[1..];
                    match (*cr, b) {
                        (false, b'\r') => *cr = true,
                        (true, b'\n') => {
                            self.state = State::ChunkSize { value: 0, digits: 0, tail: false, cr: false }
                        }
                        _ => bail!("chunk data not followed by CRLF"),
                    }
                }
                State::Trailer { line, cr } => {
                    let b = input[0];
                    input = &input[1..];
                    if *cr {
                        if b != b'\n' {
                            bail!("malformed trailer (CR without LF)");
                        }
                        if *line == 0 {
                            self.state = State::Done;
                        } else {
                            *line = 0;
                            *cr = false;
                        }
                    } else if b == b'\r' {
                        *cr = true;
                    } else if b == b'\n' {
                        bail!("malformed trailer (LF without CR)");
                    } else {
                        *line += 1;
                        if *line > MAX_HEAD {
                            bail!("trailer line longer than {MAX_HEAD} bytes");
                        }
                    }
                }
            }
        }
        Ok(matches!(self.state, State::Done))
    }

    fn take_body(&mut self, data: &[u8], out: Option<&mut Vec<u8>>) {
        self.body_len += data.len();
        if let Some(o) = out {
            o.extend_from_slice(data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed `resp` in two pieces split at `at`; the outcome (complete, status, body, keep-alive).
    fn parse_split(resp: &[u8], at: usize) -> Result<(bool, Head, Vec<u8>)> {
        let mut buf = Vec::new();
        let mut p = Parser::new(&mut buf);
        let mut body = Vec::new();
        let mut done = p.feed(&resp[..at], Some(&mut body))?;
        if at < resp.len() {
            // A response never completes before its last byte.
            assert!(!done, "complete after {at} of {} bytes", resp.len());
            done = p.feed(&resp[at..], Some(&mut body))?;
        }
        let head = p.head.ok_or_else(|| anyhow!("no head"))?;
        assert_eq!(p.body_len, body.len());
        Ok((done, head, body))
    }

    /// Every split point gives the same complete response; so does one byte at a time.
    fn check_all_splits(resp: &[u8], status: u16, body: &[u8], keep_alive: bool) {
        for at in 0..=resp.len() {
            let (done, head, got) = parse_split(resp, at).unwrap_or_else(|e| panic!("split at {at}: {e:#}"));
            assert!(done, "split at {at}: not complete");
            assert_eq!(head.status, status, "split at {at}");
            assert_eq!(head.keep_alive, keep_alive, "split at {at}");
            assert_eq!(got, body, "split at {at}");
        }
        let mut buf = Vec::new();
        let mut p = Parser::new(&mut buf);
        let mut n = 0;
        for (i, b) in resp.iter().enumerate() {
            let done = p.feed(std::slice::from_ref(b), None).unwrap();
            assert_eq!(done, i + 1 == resp.len(), "byte {i}");
            n = p.body_len;
        }
        assert_eq!(n, body.len());
    }

    #[test]
    fn content_length_at_every_split() {
        let resp = b"HTTP/1.1 200 OK\r\ncontent-type: application/vnd.apple.mpegurl\r\n\
                     CONTENT-LENGTH: 11\r\ndate: x\r\n\r\nhello world";
        check_all_splits(resp, 200, b"hello world", true);
    }

    #[test]
    fn empty_bodies() {
        check_all_splits(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n", 404, b"", true);
        check_all_splits(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n", 304, b"", true);
        check_all_splits(b"HTTP/1.1 204 No Content\r\n\r\n", 204, b"", true);
    }

    #[test]
    fn chunked_at_every_split() {
        let resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                     5\r\nhello\r\n1;ext=1\r\n \r\nA \r\n0123456789\r\n0\r\nx-trailer: y\r\n\r\n";
        check_all_splits(resp, 200, b"hello 0123456789", true);
        let resp = b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, Chunked\r\n\r\n0\r\n\r\n";
        check_all_splits(resp, 200, b"", true);
    }

    #[test]
    fn connection_close_and_http10() {
        let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: Close\r\n\r\nok";
        check_all_splits(resp, 200, b"ok", false);
        let resp = b"HTTP/1.1 200 OK\r\nconnection: upgrade, close\r\ncontent-length: 2\r\n\r\nok";
        check_all_splits(resp, 200, b"ok", false);
        check_all_splits(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", 200, b"ok", false);
        let resp = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok";
        check_all_splits(resp, 200, b"ok", true);
    }

    #[test]
    fn interim_response_is_skipped() {
        let resp = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc";
        check_all_splits(resp, 200, b"abc", true);
    }

    #[test]
    fn status_line_without_reason() {
        check_all_splits(b"HTTP/1.1 503\r\nContent-Length: 1\r\n\r\nx", 503, b"x", true);
    }

    fn parse_err(resp: &[u8]) -> String {
        let mut buf = Vec::new();
        let mut p = Parser::new(&mut buf);
        match p.feed(resp, None) {
            Ok(done) => panic!("no error for {:?} (done: {done})", String::from_utf8_lossy(resp)),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn malformed_status_line() {
        for bad in [
            &b"HTTP/2 200 OK\r\n\r\n"[..],
            b"HTTP/1.1 20 OK\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"HTTP/1.1  200 OK\r\n\r\n",
            b"http/1.1 200 OK\r\n\r\n",
            b"ICY 200 OK\r\n\r\n",
            b"\r\n\r\n",
            b"HTTP/1.1 099 x\r\n\r\n",
        ] {
            let e = parse_err(bad);
            assert!(e.contains("malformed status line"), "{e}");
        }
    }

    #[test]
    fn refused_responses() {
        let e = parse_err(b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\nbody");
        assert!(e.contains("without Content-Length"), "{e}");
        let e = parse_err(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(e.contains("both"), "{e}");
        let e = parse_err(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n");
        assert!(e.contains("conflicting"), "{e}");
        let e = parse_err(b"HTTP/1.1 200 OK\r\nContent-Length: -3\r\n\r\n");
        assert!(e.contains("bad Content-Length"), "{e}");
        let e = parse_err(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n");
        assert!(e.contains("unsupported Transfer-Encoding"), "{e}");
        let e = parse_err(b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n");
        assert!(e.contains("malformed header line"), "{e}");
        let e = parse_err(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1");
        assert!(e.contains("unexpected bytes after the response"), "{e}");
        let e = parse_err(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokX");
        assert!(e.contains("CRLF"), "{e}");
        let e = parse_err(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n");
        assert!(e.contains("chunk size"), "{e}");
        let e = parse_err(b"HTTP/1.1 101 Switching Protocols\r\n\r\n");
        assert!(e.contains("101"), "{e}");
    }

    #[test]
    fn want_stops_at_content_length() {
        let mut buf = Vec::new();
        let mut p = Parser::new(&mut buf);
        assert_eq!(p.want(), usize::MAX);
        assert!(!p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", None).unwrap());
        assert_eq!(p.want(), 7);
        assert!(p.feed(b"defghij", None).unwrap());
        assert_eq!(p.want(), 0);
        assert_eq!(p.body_len, 10);
    }

    #[test]
    fn authority_split() {
        assert_eq!(
            split_authority("127.0.0.1:8080/live/a/index.m3u8"),
            ("127.0.0.1:8080", "/live/a/index.m3u8")
        );
        assert_eq!(split_authority("example.com"), ("example.com", "/"));
        assert_eq!(split_authority("h:1/p?q=/x"), ("h:1", "/p?q=/x"));
    }

    // --- over real sockets -------------------------------------------------------------------

    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// A loopback server: per accepted connection, answers requests with `replies[conn]` in
    /// order (one per request; an empty reply reads the request and answers nothing) and closes
    /// the connection after them. Counts connections.
    async fn server(replies: Vec<Vec<&'static [u8]>>) -> (Target, Arc<AtomicUsize>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            for script in replies {
                let (mut s, _) = l.accept().await.unwrap();
                count.fetch_add(1, Relaxed);
                tokio::spawn(async move {
                    for reply in script {
                        let mut req = Vec::new();
                        while !req.ends_with(b"\r\n\r\n") {
                            let mut b = [0u8; 256];
                            let n = s.read(&mut b).await.unwrap();
                            if n == 0 {
                                return;
                            }
                            req.extend_from_slice(&b[..n]);
                        }
                        assert!(req.starts_with(b"GET /x?y=1 HTTP/1.1\r\nHost: "), "{req:?}");
                        // Byte by byte, to split the response at every boundary on the wire.
                        for b in reply {
                            s.write_all(std::slice::from_ref(b)).await.unwrap();
                        }
                    }
                });
            }
        });
        let target = Target { addr, host: addr.to_string() };
        (target, accepted)
    }

    async fn fetch(t: &Target, pool: &Pool, keep: bool) -> Result<(Reply, Vec<u8>)> {
        let mut body = Vec::new();
        let timeout = Duration::from_secs(5);
        let r = get(t, pool, "/x?y=1", keep.then_some(&mut body), Instant::now() + timeout, timeout).await?;
        Ok((r, body))
    }

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    const CHUNKED: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    const CLOSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";

    #[tokio::test]
    async fn keep_alive_reuses_one_connection() {
        let (t, accepted) = server(vec![vec![OK, CHUNKED, OK]]).await;
        let pool = Pool::default();
        let (r, body) = fetch(&t, &pool, true).await.unwrap();
        assert_eq!((r.status, r.bytes, &body[..]), (200, 2, &b"ok"[..]));
        let (r, body) = fetch(&t, &pool, true).await.unwrap();
        assert_eq!((r.status, r.bytes, &body[..]), (200, 3, &b"abc"[..]));
        let (r, body) = fetch(&t, &pool, false).await.unwrap();
        assert_eq!((r.status, r.bytes, body.len()), (200, 2, 0));
        assert_eq!(accepted.load(Relaxed), 1);
    }

    #[tokio::test]
    async fn connection_close_is_not_reused() {
        let (t, accepted) = server(vec![vec![CLOSE], vec![OK]]).await;
        let pool = Pool::default();
        fetch(&t, &pool, true).await.unwrap();
        fetch(&t, &pool, true).await.unwrap();
        assert_eq!(accepted.load(Relaxed), 2);
    }

    #[tokio::test]
    async fn idle_connection_closed_by_server_is_retried_once() {
        // The first connection serves one request and closes; the retry goes to a new one.
        let (t, accepted) = server(vec![vec![OK], vec![CHUNKED]]).await;
        let pool = Pool::default();
        fetch(&t, &pool, true).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await; // let the close arrive
        let (r, body) = fetch(&t, &pool, true).await.unwrap();
        assert_eq!((r.status, &body[..]), (200, &b"abc"[..]));
        assert_eq!(accepted.load(Relaxed), 2);
    }

    #[tokio::test]
    async fn fresh_connection_closed_is_an_error() {
        let (t, accepted) = server(vec![vec![b""]]).await;
        let e = fetch(&t, &Pool::default(), false).await.unwrap_err();
        assert!(format!("{e:#}").contains("before any response byte"), "{e:#}");
        assert_eq!(accepted.load(Relaxed), 1);
    }

    #[tokio::test]
    async fn closed_mid_response_is_not_retried() {
        let (t, accepted) = server(vec![vec![OK, b"HTTP/1.1 200 OK\r\nContent-Len"], vec![OK]]).await;
        let pool = Pool::default();
        fetch(&t, &pool, false).await.unwrap();
        let e = fetch(&t, &pool, false).await.unwrap_err();
        assert!(format!("{e:#}").contains("mid-response"), "{e:#}");
        assert_eq!(accepted.load(Relaxed), 1);
    }
}
