//! Streaming blob transfers in parallel blocks, with bounded memory: at most
//! `connections + 1` blocks are held at once.
//!
//! - Upload: a source that fits in one block is sent with one Put Blob; anything larger is
//!   read block by block (file or standard input, never whole), each block sent with Put
//!   Block (with its Content-MD5), then committed with Put Block List. Without `--overwrite`
//!   an existing blob is refused before anything is sent, and the commit carries
//!   `If-None-Match: *`.
//! - Download: HEAD for the size and ETag, then ranged GETs (`x-ms-range`, `If-Match` the
//!   ETag, so a blob replaced meanwhile fails with 412 instead of mixing versions), written in
//!   order. To a file, bytes go to `FILE.coffer-part` with the blob's ETag and size in
//!   `FILE.coffer-part.json`; an interrupted download run again resumes at the end of the part
//!   file when the blob is unchanged (same ETag and size), and the part file is renamed to
//!   FILE at the end.
//! - Progress (bytes, rate, ETA) is drawn on standard error when it is a terminal.
use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

use crate::blob::BlobClient;

const MIB: u64 = 1024 * 1024;
/// Azure's limit on blocks per blob.
const MAX_BLOCKS: u64 = 50_000;
/// Tries per block before the transfer fails (network errors and 5xx only).
const TRIES: u32 = 3;

pub struct Options {
    pub block_size: u64,
    pub connections: usize,
    pub progress: bool,
}

impl Options {
    pub fn new(block_size_mib: u64, connections: usize, no_progress: bool) -> Self {
        Self {
            block_size: block_size_mib.clamp(1, 4000) * MIB,
            connections: connections.clamp(1, 64),
            progress: !no_progress && std::io::stderr().is_terminal(),
        }
    }
}

/// A progress line on standard error: bytes, rate, ETA.
struct Progress {
    done: AtomicU64,
    total: Option<u64>,
    start: Instant,
    stop: AtomicBool,
}

impl Progress {
    fn start(
        total: Option<u64>,
        initial: u64,
        enabled: bool,
    ) -> (Arc<Self>, Option<JoinHandle<()>>) {
        let p = Arc::new(Self {
            done: AtomicU64::new(initial),
            total,
            start: Instant::now(),
            stop: AtomicBool::new(false),
        });
        let ticker = enabled.then(|| {
            let p = p.clone();
            tokio::spawn(async move {
                while !p.stop.load(Ordering::Relaxed) {
                    p.draw(initial);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                p.draw(initial);
                eprintln!();
            })
        });
        (p, ticker)
    }

    fn add(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }

    fn draw(&self, initial: u64) {
        let done = self.done.load(Ordering::Relaxed);
        let secs = self.start.elapsed().as_secs_f64().max(0.001);
        let rate = (done.saturating_sub(initial)) as f64 / secs;
        let mut line = format!("\r{}", human(done as f64));
        if let Some(t) = self.total {
            let pct = if t == 0 {
                100.0
            } else {
                done as f64 * 100.0 / t as f64
            };
            line.push_str(&format!(" / {}  {pct:3.0}%", human(t as f64)));
        }
        line.push_str(&format!("  {}/s", human(rate)));
        if let Some(t) = self.total
            && rate > 0.0
        {
            let eta = (t.saturating_sub(done)) as f64 / rate;
            line.push_str(&format!("  ETA {}", hms(eta)));
        }
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "{line:<70}");
        let _ = err.flush();
    }

    async fn finish(&self, ticker: Option<JoinHandle<()>>) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = ticker {
            let _ = t.await;
        }
    }
}

fn human(b: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{v:.0} {}", UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn hms(secs: f64) -> String {
    let s = secs.round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// Fill `buf` from `r` up to `want` bytes (fewer only at end of input).
async fn read_block<R: AsyncRead + Unpin>(r: &mut R, want: usize) -> anyhow::Result<Vec<u8>> {
    let mut buf = vec![0u8; want];
    let mut n = 0;
    while n < want {
        let k = r.read(&mut buf[n..]).await.context("reading the source")?;
        if k == 0 {
            break;
        }
        n += k;
    }
    buf.truncate(n);
    Ok(buf)
}

fn status_of(e: &anyhow::Error) -> Option<u16> {
    e.chain()
        .find_map(|c| c.downcast_ref::<crate::error::ApiError>())
        .map(|a| a.status)
}

fn retryable(e: &anyhow::Error) -> bool {
    status_of(e).is_none_or(|s| s >= 500)
}

/// Run `f` up to [`TRIES`] times while it fails with a network error or a 5xx.
async fn with_retries<T, F, Fut>(mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let mut attempt = 1;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if attempt < TRIES && retryable(&e) => {
                tokio::time::sleep(Duration::from_millis(300 * u64::from(attempt))).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

fn md5_b64(data: &[u8]) -> String {
    let mut m = coffer_crypto::checksum::Md5::new();
    m.update(data);
    coffer_crypto::b64::std_encode(&m.finish())
}

pub struct Upload<'a> {
    pub container: &'a str,
    pub blob: &'a str,
    pub content_type: &'a str,
    pub overwrite: bool,
}

/// Upload from a file, or from standard input when `file` is `-`.
pub async fn upload(
    c: &BlobClient,
    u: &Upload<'_>,
    file: &str,
    o: &Options,
) -> anyhow::Result<Value> {
    if !u.overwrite {
        match c.properties(u.container, u.blob).await {
            Ok(_) => {
                return Err(crate::error::ApiError {
                    status: 409,
                    code: "BlobAlreadyExists".into(),
                    message: format!(
                        "The blob '{}' already exists in container '{}'; pass --overwrite to replace it.",
                        u.blob, u.container
                    ),
                    request_id: None,
                }
                .into());
            }
            Err(e) if status_of(&e) == Some(404) => {}
            Err(e) => return Err(e),
        }
    }
    if file == "-" {
        let mut stdin = tokio::io::stdin();
        upload_from(c, u, &mut stdin, None, o).await
    } else {
        let mut f = tokio::fs::File::open(file)
            .await
            .with_context(|| format!("opening {file}"))?;
        let size = f.metadata().await?.len();
        upload_from(c, u, &mut f, Some(size), o).await
    }
}

async fn upload_from<R: AsyncRead + Unpin>(
    c: &BlobClient,
    u: &Upload<'_>,
    r: &mut R,
    size: Option<u64>,
    o: &Options,
) -> anyhow::Result<Value> {
    // Blocks large enough that the whole source fits in 50,000 of them.
    let mut bs = o.block_size;
    if let Some(s) = size {
        bs = bs.max(s.div_ceil(MAX_BLOCKS).div_ceil(MIB) * MIB);
    }
    let bs_usize = usize::try_from(bs)?;
    let first = read_block(r, bs_usize).await?;
    let (progress, ticker) = Progress::start(size, 0, o.progress);
    let cond: Vec<(&str, String)> = if u.overwrite {
        vec![]
    } else {
        vec![("if-none-match", "*".to_string())]
    };
    if first.len() < bs_usize {
        // One Put Blob.
        let len = first.len();
        let mut headers = vec![
            ("content-length", len.to_string()),
            ("content-type", u.content_type.to_string()),
            ("content-md5", md5_b64(&first)),
            ("x-ms-blob-type", "BlockBlob".to_string()),
        ];
        headers.extend(cond.iter().cloned());
        let body = bytes_of(first);
        let resp = with_retries(|| async {
            let rb = c
                .request(Method::PUT, Some(u.container), Some(u.blob), &[], &headers)?
                .body(body.clone());
            BlobClient::send(rb).await
        })
        .await;
        progress.add(len as u64);
        progress.finish(ticker).await;
        let resp = resp?;
        return Ok(put_result(&resp, len as u64, 1));
    }
    let nonce: String = coffer_crypto::random::uuid()
        .map_err(|e| anyhow!("randomness: {e}"))?
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(16)
        .collect();
    let mut ids: Vec<String> = Vec::new();
    let mut inflight: VecDeque<JoinHandle<anyhow::Result<()>>> = VecDeque::new();
    let mut total: u64 = 0;
    let mut block = first;
    let result: anyhow::Result<()> = async {
        loop {
            if block.is_empty() {
                break;
            }
            if ids.len() as u64 >= MAX_BLOCKS {
                bail!("the source is larger than {MAX_BLOCKS} blocks of {} MiB; pass a larger --block-size", bs / MIB);
            }
            let id = coffer_crypto::b64::std_encode(format!("coffer-{nonce}-{:06}", ids.len()).as_bytes());
            ids.push(id.clone());
            total += block.len() as u64;
            let last = (block.len() as u64) < bs;
            let (c2, container, blob, p) = (c.clone(), u.container.to_string(), u.blob.to_string(), progress.clone());
            let data = block;
            inflight.push_back(tokio::spawn(async move {
                let len = data.len();
                let md5 = md5_b64(&data);
                let body = bytes_of(data);
                with_retries(|| async {
                    let rb = c2
                        .request(
                            Method::PUT,
                            Some(&container),
                            Some(&blob),
                            &[("comp", "block".into()), ("blockid", id.clone())],
                            &[("content-length", len.to_string()), ("content-md5", md5.clone())],
                        )?
                        .body(body.clone());
                    BlobClient::send(rb).await
                })
                .await?;
                p.add(len as u64);
                Ok(())
            }));
            while inflight.len() >= o.connections {
                if let Some(h) = inflight.pop_front() {
                    h.await.map_err(|e| anyhow!("upload task: {e}"))??;
                }
            }
            if last {
                break;
            }
            block = read_block(r, bs_usize).await?;
        }
        while let Some(h) = inflight.pop_front() {
            h.await.map_err(|e| anyhow!("upload task: {e}"))??;
        }
        Ok(())
    }
    .await;
    for h in inflight {
        h.abort();
    }
    if let Err(e) = result {
        progress.finish(ticker).await;
        return Err(e);
    }
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList>");
    for id in &ids {
        xml.push_str(&format!("<Latest>{id}</Latest>"));
    }
    xml.push_str("</BlockList>");
    let mut headers = vec![
        ("content-length", xml.len().to_string()),
        ("content-type", "application/xml".to_string()),
        ("x-ms-blob-content-type", u.content_type.to_string()),
    ];
    headers.extend(cond.iter().cloned());
    let body = bytes_of(xml.into_bytes());
    let resp = with_retries(|| async {
        let rb = c
            .request(
                Method::PUT,
                Some(u.container),
                Some(u.blob),
                &[("comp", "blocklist".into())],
                &headers,
            )?
            .body(body.clone());
        BlobClient::send(rb).await
    })
    .await;
    progress.finish(ticker).await;
    Ok(put_result(&resp?, total, ids.len()))
}

fn bytes_of(v: Vec<u8>) -> bytes::Bytes {
    bytes::Bytes::from(v)
}

fn put_result(resp: &reqwest::Response, size: u64, blocks: usize) -> Value {
    let h = |n: &str| {
        resp.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    json!({
        "etag": h("etag"),
        "lastModified": h("last-modified"),
        "contentLength": size,
        "blocks": blocks,
        "requestServerEncrypted": h("x-ms-request-server-encrypted").map(|v| v == "true"),
    })
}

fn part_paths(dest: &Path) -> (PathBuf, PathBuf) {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "download".into());
    (
        dest.with_file_name(format!("{name}.coffer-part")),
        dest.with_file_name(format!("{name}.coffer-part.json")),
    )
}

/// Download to a file, or to standard output when `file` is `-`.
pub async fn download(
    c: &BlobClient,
    container: &str,
    blob: &str,
    file: &str,
    resume: bool,
    o: &Options,
) -> anyhow::Result<Value> {
    let (size, etag, content_type) = c.properties(container, blob).await?;
    if file == "-" {
        let mut out = tokio::io::stdout();
        let (progress, ticker) = Progress::start(Some(size), 0, o.progress);
        let r = fetch_ranges(c, container, blob, &etag, 0, size, o, &progress, &mut out).await;
        progress.finish(ticker).await;
        r?;
        out.flush().await?;
        return Ok(Value::Null);
    }
    let dest = PathBuf::from(file);
    let (part, state) = part_paths(&dest);
    let want_state = json!({"etag": etag, "size": size, "account": c.account, "container": container, "blob": blob});
    let mut offset = 0u64;
    if resume
        && let Ok(text) = std::fs::read_to_string(&state)
        && serde_json::from_str::<Value>(&text).ok().as_ref() == Some(&want_state)
        && let Ok(m) = std::fs::metadata(&part)
        && m.len() <= size
    {
        offset = m.len();
    }
    let mut f = if offset > 0 {
        eprintln!("coffer: resuming the download of {blob} at byte {offset} of {size}");
        tokio::fs::OpenOptions::new()
            .append(true)
            .open(&part)
            .await
            .with_context(|| format!("opening {}", part.display()))?
    } else {
        let f = tokio::fs::File::create(&part)
            .await
            .with_context(|| format!("creating {}", part.display()))?;
        std::fs::write(&state, serde_json::to_vec(&want_state)?)
            .with_context(|| format!("writing {}", state.display()))?;
        f
    };
    let (progress, ticker) = Progress::start(Some(size), offset, o.progress);
    let r = fetch_ranges(
        c, container, blob, &etag, offset, size, o, &progress, &mut f,
    )
    .await;
    progress.finish(ticker).await;
    r?;
    f.flush().await?;
    f.sync_all().await?;
    drop(f);
    let got = std::fs::metadata(&part)?.len();
    if got != size {
        bail!("downloaded {got} bytes, expected {size}; run the command again to resume");
    }
    std::fs::rename(&part, &dest).with_context(|| format!("renaming to {}", dest.display()))?;
    let _ = std::fs::remove_file(&state);
    Ok(json!({
        "name": blob,
        "container": container,
        "file": dest.display().to_string(),
        "contentLength": size,
        "etag": etag,
        "contentType": content_type,
        "resumedAt": (offset > 0).then_some(offset),
    }))
}

#[allow(clippy::too_many_arguments)]
async fn fetch_ranges<W: tokio::io::AsyncWrite + Unpin>(
    c: &BlobClient,
    container: &str,
    blob: &str,
    etag: &str,
    from: u64,
    size: u64,
    o: &Options,
    progress: &Arc<Progress>,
    out: &mut W,
) -> anyhow::Result<()> {
    let bs = o.block_size;
    let mut inflight: VecDeque<JoinHandle<anyhow::Result<bytes::Bytes>>> = VecDeque::new();
    let mut next = from;
    let result: anyhow::Result<()> = async {
        loop {
            while next < size && inflight.len() < o.connections {
                let end = (next + bs).min(size);
                let (c2, container, blob, etag) = (
                    c.clone(),
                    container.to_string(),
                    blob.to_string(),
                    etag.to_string(),
                );
                let start = next;
                inflight.push_back(tokio::spawn(async move {
                    with_retries(|| async {
                        let rb = c2.request(
                            Method::GET,
                            Some(&container),
                            Some(&blob),
                            &[],
                            &[
                                ("x-ms-range", format!("bytes={start}-{}", end - 1)),
                                ("if-match", etag.clone()),
                            ],
                        )?;
                        let resp = BlobClient::send(rb).await?;
                        let b = resp.bytes().await.context("reading a range")?;
                        if b.len() as u64 != end - start {
                            bail!("short range: {} bytes instead of {}", b.len(), end - start);
                        }
                        Ok(b)
                    })
                    .await
                }));
                next = end;
            }
            let Some(h) = inflight.pop_front() else { break };
            let b = h.await.map_err(|e| anyhow!("download task: {e}"))??;
            out.write_all(&b).await.context("writing the download")?;
            progress.add(b.len() as u64);
        }
        Ok(())
    }
    .await;
    for h in inflight {
        h.abort();
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting() {
        assert_eq!(human(512.0), "512 B");
        assert_eq!(human(3.0 * MIB as f64), "3.0 MiB");
        assert_eq!(hms(75.0), "1m15s");
        assert_eq!(hms(5.0), "5s");
        let (p, s) = part_paths(Path::new("/tmp/x/out.bin"));
        assert_eq!(p, Path::new("/tmp/x/out.bin.coffer-part"));
        assert_eq!(s, Path::new("/tmp/x/out.bin.coffer-part.json"));
    }
}
