//! File bodies by `sendfile(2)` on plain HTTP/1 connections: the kernel hands page-cache pages
//! to the socket, with no read into user space and no copy into actix's write buffer.
//!
//! actix-http writes every body through its own buffer and never lends out the socket, so this
//! works around it from both ends of one connection:
//!
//! - Plain HTTP connections are served through [`SendfileStream`], the socket with a queue of
//!   file jobs ([`ConnFiles`], also in the connection's data for handlers to find).
//! - A handler answering with a file calls [`respond`]: the job (file, offset, length) is queued
//!   and the response goes out with its `Content-Length`, unchunked, and a body that is only a
//!   marker of [`MARKER_LEN`] bytes: a per-process random prefix and the job's number.
//! - When actix writes its buffer, [`SendfileStream`] writes everything before the marker (the
//!   head, with `MSG_MORE` so that head and body leave in full packets), then sends the job's
//!   bytes from the file, and only then reports the marker written: anything actix buffered
//!   after it (a pipelined response) goes out after the body, as HTTP needs.
//!
//! Everything else (TLS connections, `HEAD`, 304 and other bodiless answers) keeps actix's own
//! path. A file that ends early (cut while being sent) closes the connection: its
//! `Content-Length` can no longer be honoured.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::LazyLock;
use std::task::{ready, Context, Poll};

use actix_web::body::{BodySize, MessageBody};
use actix_web::http::header::{self, HeaderValue};
use actix_web::rt::net::TcpStream;
use actix_web::{HttpRequest, HttpResponse};
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

/// Random prefix + job number.
pub const MARKER_LEN: usize = 24;
const PREFIX_LEN: usize = 16;

/// This process's marker prefix: random, so a body can never contain it by chance or design.
static PREFIX: LazyLock<[u8; PREFIX_LEN]> = LazyLock::new(rand::random);

/// Largest single `sendfile` call; the socket takes what fits anyway.
const CHUNK: usize = 1 << 20;

/// One file range waiting for its marker.
struct Job {
    file: File,
    offset: u64,
    remaining: u64,
}

/// A connection's queued file bodies, shared by its [`SendfileStream`] and its handlers (both
/// on the connection's worker thread).
#[derive(Default)]
pub struct ConnFiles {
    jobs: RefCell<HashMap<u64, Job>>,
    next: Cell<u64>,
}

impl ConnFiles {
    fn queue(&self, job: Job) -> Bytes {
        let id = self.next.get();
        self.next.set(id + 1);
        self.jobs.borrow_mut().insert(id, job);
        let mut marker = Vec::with_capacity(MARKER_LEN);
        marker.extend_from_slice(&PREFIX[..]);
        marker.extend_from_slice(&id.to_le_bytes());
        Bytes::from(marker)
    }
}

/// A plain TCP connection whose writes carry out the [`ConnFiles`] jobs their markers name.
pub struct SendfileStream {
    io: TcpStream,
    files: Rc<ConnFiles>,
    active: Option<Job>,
}

impl SendfileStream {
    pub fn new(io: TcpStream) -> Self {
        SendfileStream { io, files: Rc::new(ConnFiles::default()), active: None }
    }

    pub fn get_ref(&self) -> &TcpStream {
        &self.io
    }

    /// For the connection's data (`HttpRequest::conn_data::<Rc<ConnFiles>>`).
    pub fn files(&self) -> Rc<ConnFiles> {
        self.files.clone()
    }

    /// Send the active job to its end; `Ready(Ok)` when it is all sent.
    fn poll_job(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(job) = self.active.as_mut() {
            if job.remaining == 0 {
                self.active = None;
                break;
            }
            ready!(self.io.poll_write_ready(cx))?;
            let count = job.remaining.min(CHUNK as u64) as usize;
            let (io, file, offset) = (&self.io, &job.file, &mut job.offset);
            let sent = io.try_io(Interest::WRITABLE, || {
                Ok(rustix::fs::sendfile(io, file, Some(offset), count)? as u64)
            });
            match sent {
                Ok(0) => {
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file ended early")))
                }
                Ok(n) => job.remaining -= n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Write `buf` (bytes before a marker) with `MSG_MORE`: the body follows at once.
    fn poll_write_more(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        use rustix::net::SendFlags;
        loop {
            ready!(self.io.poll_write_ready(cx))?;
            let io = &self.io;
            let sent = io.try_io(Interest::WRITABLE, || {
                Ok(rustix::net::send(io, buf, SendFlags::MORE | SendFlags::NOSIGNAL)?)
            });
            match sent {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return Poll::Ready(other),
            }
        }
    }
}

fn marker_job(buf: &[u8]) -> Option<u64> {
    let id = buf.get(PREFIX_LEN..MARKER_LEN)?;
    Some(u64::from_le_bytes(id.try_into().ok()?))
}

impl AsyncWrite for SendfileStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.active.is_some() {
            // The marker at `buf[0..MARKER_LEN]` stands for this job: written when it is.
            ready!(this.poll_job(cx))?;
            return Poll::Ready(Ok(MARKER_LEN));
        }
        if this.files.jobs.borrow().is_empty() {
            return Pin::new(&mut this.io).poll_write(cx, buf);
        }
        match memchr::memmem::find(buf, &PREFIX[..]) {
            None => Pin::new(&mut this.io).poll_write(cx, buf),
            Some(0) => {
                let job = marker_job(buf).and_then(|id| this.files.jobs.borrow_mut().remove(&id));
                let Some(job) = job else {
                    return Poll::Ready(Err(io::Error::other("a file body's job is missing")));
                };
                this.active = Some(job);
                ready!(this.poll_job(cx))?;
                Poll::Ready(Ok(MARKER_LEN))
            }
            Some(at) => this.poll_write_more(cx, &buf[..at]),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl AsyncRead for SendfileStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

/// A body actix writes as is (no length of its own, no chunking): the marker.
struct Marker(Option<Bytes>);

impl MessageBody for Marker {
    type Error = std::convert::Infallible;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Poll::Ready(self.0.take().map(Ok))
    }
}

/// `res` (actix-files' answer for `file`, a handle of its own: status, validators,
/// `Content-Range`) with its body sent by `sendfile` when the connection can: a plain HTTP/1
/// `GET` answered 200 or 206. Otherwise `res` as it is.
pub fn respond(req: &HttpRequest, file: File, res: HttpResponse) -> HttpResponse {
    let Some(files) = req.conn_data::<Rc<ConnFiles>>() else { return res };
    if req.method() != actix_web::http::Method::GET || req.version() != actix_web::http::Version::HTTP_11 {
        return res;
    }
    let range = match res.status().as_u16() {
        200 => file.metadata().ok().map(|m| (0, m.len())),
        206 => content_range(res.headers().get(header::CONTENT_RANGE)),
        _ => None,
    };
    let Some((offset, len)) = range.filter(|&(_, len)| len > 0) else { return res };
    let marker = files.queue(Job { file, offset, remaining: len });
    let (head, _) = res.into_parts();
    let mut res = head.set_body(Marker(Some(marker))).map_into_boxed_body();
    res.head_mut().no_chunking(true);
    res.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    res
}

/// `bytes first-last/size` -> (first, length).
fn content_range(value: Option<&HeaderValue>) -> Option<(u64, u64)> {
    let spec = value?.to_str().ok()?.strip_prefix("bytes ")?;
    let (range, _) = spec.split_once('/')?;
    let (first, last) = range.split_once('-')?;
    let (first, last): (u64, u64) = (first.parse().ok()?, last.parse().ok()?);
    (last >= first).then(|| (first, last - first + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges_read_as_offset_and_length() {
        let v = |s: &'static str| HeaderValue::from_static(s);
        assert_eq!(content_range(Some(&v("bytes 0-99/1000"))), Some((0, 100)));
        assert_eq!(content_range(Some(&v("bytes 900-999/1000"))), Some((900, 100)));
        assert_eq!(content_range(Some(&v("bytes */1000"))), None);
        assert_eq!(content_range(Some(&v("bytes 9-3/1000"))), None);
        assert_eq!(content_range(None), None);
    }

    #[test]
    fn markers_name_their_job() {
        let files = ConnFiles::default();
        let file = File::open("/dev/null").unwrap();
        let a = files.queue(Job { file: file.try_clone().unwrap(), offset: 0, remaining: 1 });
        let b = files.queue(Job { file, offset: 0, remaining: 1 });
        assert_eq!(a.len(), MARKER_LEN);
        assert_eq!(&a[..PREFIX_LEN], &PREFIX[..]);
        assert_eq!((marker_job(&a), marker_job(&b)), (Some(0), Some(1)));
    }
}
