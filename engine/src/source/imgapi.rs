//! The IMGAPI client: ping, ListImages (paged), GetImage and a streaming
//! GetImageFile with Range, over reqwest (rustls); and for `publish`
//! AdminImportImage, a streaming AddImageFile, ActivateImage and
//! DeleteImage.
//!
//! Engine verbs are synchronous, so the client drives its requests on one
//! process-wide tokio runtime (`block_on` from the calling thread) and hands
//! file bodies out as a blocking `Read`. Every request carries
//! `Accept-Version: ~2`, the User-Agent (plus `userAgentExtra`), the
//! process's `x-request-id` and, when the source has one, `channel=`.
//! Certificates are verified unless the source is insecure or
//! `IMGADM_INSECURE=1`; proxies come from the environment (reqwest's
//! default).

use std::io::Read;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use reqwest::{Response, StatusCode};
use serde_json::Value;

use super::{request_id, SourceSpec, SourceType};
use crate::error::{Error, Result};
use crate::ids::ImageUuid;
use crate::manifest::Manifest;

/// The page size of ListImages after the first page (the server's cap).
const PAGE_LIMIT: usize = 1000;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// How long a response may go without a byte before it counts as stalled:
/// `IMGADM_READ_TIMEOUT_SECS`, default 60 s.
pub fn read_timeout() -> Duration {
    std::env::var("IMGADM_READ_TIMEOUT_SECS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|v| *v > 0.0)
        .map(Duration::from_secs_f64)
        .unwrap_or(Duration::from_secs(60))
}

fn runtime() -> Result<&'static tokio::runtime::Runtime> {
    static RUNTIME: OnceLock<std::result::Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("imgadm-http")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| Error::internal(format!("cannot start the HTTP runtime: {e}")))
}

/// What a client needs besides the source itself.
#[derive(Clone, Debug, Default)]
pub struct ClientOptions {
    /// `userAgentExtra` from the config.
    pub user_agent_extra: Option<String>,
}

/// A client for one IMGAPI source.
#[derive(Clone, Debug)]
pub struct ImgapiClient {
    /// The source as configured (what messages and the manifest cache show).
    pub spec: SourceSpec,
    /// The normalised URL without its query: requests go below it.
    base: String,
    channel: Option<String>,
    http: reqwest::Client,
}

/// The start of a GetImageFile answer.
pub struct FileResponse {
    /// 206: the body starts at the requested offset; else it starts at 0.
    pub partial: bool,
    /// The body's length as the server announced it.
    pub content_length: Option<u64>,
    /// The file's `Etag` (its sha1 on sdc-imgapi).
    pub etag: Option<String>,
    pub body: BodyReader,
}

impl ImgapiClient {
    pub fn new(spec: &SourceSpec, options: &ClientOptions) -> Result<ImgapiClient> {
        if spec.kind != SourceType::Imgapi {
            return Err(Error::NotSupported(format!(
                "{} sources are not supported by this imgadm: only \"imgapi\" sources can be used ({})",
                spec.kind.as_str(),
                spec.describe()
            )));
        }
        let normalized = super::normalize_url(&spec.url);
        let (base, query) = match normalized.split_once('?') {
            Some((base, query)) => (base.to_string(), Some(query.to_string())),
            None => (normalized, None),
        };
        let url_channel = query.as_deref().and_then(|q| {
            q.split('&').find_map(|pair| pair.strip_prefix("channel=")).map(str::to_string)
        });
        let mut agent = format!("imgadm/{} (imgadm-rs; rust)", env!("CARGO_PKG_VERSION"));
        if let Some(extra) = &options.user_agent_extra {
            agent.push(' ');
            agent.push_str(extra);
        }
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("accept-version", reqwest::header::HeaderValue::from_static("~2"));
        if let Ok(id) = reqwest::header::HeaderValue::from_str(request_id()) {
            headers.insert("x-request-id", id);
        }
        let insecure = spec.insecure || std::env::var("IMGADM_INSECURE").is_ok_and(|v| v == "1");
        let http = reqwest::Client::builder()
            .user_agent(agent)
            .default_headers(headers)
            .connect_timeout(CONNECT_TIMEOUT)
            .danger_accept_invalid_certs(insecure)
            .build()
            .map_err(|e| Error::Client { url: spec.url.clone(), detail: e.to_string() })?;
        Ok(ImgapiClient { spec: spec.clone(), base, channel: spec.channel.clone().or(url_channel), http })
    }

    /// The source URL as configured (with its `?channel=`, if any).
    pub fn url(&self) -> &str {
        &self.spec.url
    }

    fn request(&self, method: reqwest::Method, path: &str, query: &[(&str, String)]) -> reqwest::RequestBuilder {
        let mut params: Vec<(&str, String)> = query.to_vec();
        if let Some(channel) = &self.channel {
            params.push(("channel", channel.clone()));
        }
        self.http.request(method, format!("{}{path}", self.base)).query(&params)
    }

    fn transport_error(&self, e: impl std::fmt::Display) -> Error {
        Error::Client { url: self.spec.url.clone(), detail: e.to_string() }
    }

    /// Sends a request; a non-2xx answer becomes `Error::Api` with the
    /// server's code.
    fn send(&self, request: reqwest::RequestBuilder) -> Result<Response> {
        self.send_watched(request, Wait::Answer(CONNECT_TIMEOUT + read_timeout()))
    }

    /// `send`, waiting as `wait` says.
    fn send_watched(&self, request: reqwest::RequestBuilder, wait: Wait) -> Result<Response> {
        let rt = runtime()?;
        let response = rt
            .block_on(async {
                match wait {
                    Wait::Answer(limit) => tokio::time::timeout(limit, request.send()).await.map_err(drop),
                    Wait::Progress(progress) => {
                        let send = request.send();
                        tokio::pin!(send);
                        loop {
                            tokio::select! {
                                sent = &mut send => break Ok(sent),
                                () = tokio::time::sleep(UPLOAD_WATCH_INTERVAL) => {
                                    if progress.idle() > read_timeout() {
                                        break Err(());
                                    }
                                }
                            }
                        }
                    }
                }
            })
            .map_err(|()| self.transport_error("timed out: the server took no bytes and gave no answer"))?
            .map_err(|e| self.transport_error(describe_reqwest(&e)))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body = self.read_body(response).unwrap_or_default();
        Err(self.api_error(status, &body))
    }

    fn read_body(&self, response: Response) -> Result<Vec<u8>> {
        runtime()?
            .block_on(async { tokio::time::timeout(read_timeout(), response.bytes()).await })
            .map_err(|_| self.transport_error("timed out reading the server's answer"))?
            .map(|b| b.to_vec())
            .map_err(|e| self.transport_error(describe_reqwest(&e)))
    }

    /// `{code, message, errors[]}` as the real imgadm shows it: `URL:
    /// message`, then `    field: code[: message]` per error.
    fn api_error(&self, status: StatusCode, body: &[u8]) -> Error {
        let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let code = parsed.get("code").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| {
            if status.is_server_error() { "InternalError" } else { "HttpError" }.to_string()
        });
        let mut message = parsed.get("message").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| {
            let text = String::from_utf8_lossy(&body[..body.len().min(1024)]).into_owned();
            format!("statusCode {}, {}", status.as_u16(), text.trim())
        });
        for error in parsed.get("errors").and_then(Value::as_array).into_iter().flatten() {
            let field = error.get("field").and_then(Value::as_str).unwrap_or("?");
            let code = error.get("code").and_then(Value::as_str).unwrap_or("?");
            message.push_str(&format!("\n    {field}: {code}"));
            if let Some(text) = error.get("message").and_then(Value::as_str) {
                message.push_str(&format!(": {text}"));
            }
        }
        Error::Api { code, url: self.spec.url.clone(), message, status: status.as_u16() }
    }

    fn get_json(&self, path: &str, query: &[(&str, String)]) -> Result<Value> {
        self.json_answer(self.send(self.request(reqwest::Method::GET, path, query).header("accept", "application/json"))?)
    }

    fn json_answer(&self, response: Response) -> Result<Value> {
        let status = response.status();
        let body = self.read_body(response)?;
        self.parse_json(status, &body)
    }

    fn parse_json(&self, status: StatusCode, body: &[u8]) -> Result<Value> {
        serde_json::from_slice(body).map_err(|_| {
            let text = String::from_utf8_lossy(&body[..body.len().min(1024)]).into_owned();
            self.transport_error(format!("statusCode {}, response not JSON: {text}", status.as_u16()))
        })
    }

    /// `GET /ping`: fine when the answer says `imgapi: true`.
    pub fn ping(&self) -> Result<()> {
        let answer = self.get_json("/ping", &[])?;
        match answer.get("imgapi") {
            Some(Value::Bool(true)) => Ok(()),
            _ => Err(self.transport_error(format!("not an IMGAPI server (ping answered {answer})"))),
        }
    }

    /// Every (active) image, paged as the official client pages: the first
    /// request without limit or marker, then `marker=LAST&limit=1000` (the
    /// marker image comes back first and is dropped), until a short or empty
    /// page or a marker that does not advance. Building a page's manifests
    /// costs about as much as waiting for the page, so each page is parsed
    /// on its own thread while the next one is fetched.
    pub fn list_images(&self) -> Result<Vec<Manifest>> {
        std::thread::scope(|scope| {
            let mut parsing = Vec::new();
            let mut marker_before: Option<String> = None;
            let mut page = self.get_page(&[])?;
            loop {
                let full = page.len >= PAGE_LIMIT;
                let skip_first = marker_before.is_some() && page.first == marker_before;
                let marker = if page.len > usize::from(skip_first) { page.last.clone() } else { marker_before.clone() };
                let items = page.items;
                parsing.push(scope.spawn(move || self.manifests(items, skip_first)));
                if !full || marker.is_none() || marker == marker_before {
                    break;
                }
                page = self.get_page(&[("marker", marker.clone().unwrap_or_default()), ("limit", PAGE_LIMIT.to_string())])?;
                marker_before = marker;
                if page.len == 0 {
                    break;
                }
            }
            let mut all = Vec::new();
            for handle in parsing {
                all.extend(handle.join().map_err(|_| Error::internal("a thread parsing an image list panicked"))??);
            }
            Ok(all)
        })
    }

    /// One page of ListImages, with the uuids paging needs read first.
    fn get_page(&self, query: &[(&str, String)]) -> Result<Page> {
        let request = self.request(reqwest::Method::GET, "/images", query).header("accept", "application/json");
        let response = self.send(request)?;
        let status = response.status();
        let body = self.read_body(response)?;
        // Only each image's uuid, every other field skipped unbuilt.
        #[derive(serde::Deserialize)]
        struct UuidOnly {
            uuid: Option<Value>,
        }
        if let Ok(outline) = serde_json::from_slice::<Vec<UuidOnly>>(&body) {
            let uuid = |item: Option<&UuidOnly>| item.and_then(|i| i.uuid.as_ref()?.as_str().map(str::to_string));
            return Ok(Page {
                len: outline.len(),
                first: uuid(outline.first()),
                last: uuid(outline.last()),
                items: PageItems::Unparsed(body),
            });
        }
        // Anything else (not an array of objects, a repeated key) is parsed
        // whole here: its errors are the ones to report.
        let items = match self.parse_json(status, &body)? {
            Value::Array(items) => items,
            other => return Err(self.transport_error(format!("ListImages answered a non-array: {other}"))),
        };
        let uuid = |item: Option<&Value>| item.and_then(uuid_of).map(str::to_string);
        Ok(Page { len: items.len(), first: uuid(items.first()), last: uuid(items.last()), items: PageItems::Parsed(items) })
    }

    fn manifests(&self, items: PageItems, skip_first: bool) -> Result<Vec<Manifest>> {
        let items = match items {
            PageItems::Parsed(items) => items,
            PageItems::Unparsed(body) => serde_json::from_slice::<Vec<Value>>(&body)
                .map_err(|e| self.transport_error(format!("ListImages answer could not be read: {e}")))?,
        };
        items.into_iter().skip(usize::from(skip_first)).map(Manifest::from_value).collect()
    }

    /// `GET /images/UUID`; `None` when the server says 404.
    pub fn get_image(&self, uuid: ImageUuid) -> Result<Option<Manifest>> {
        match self.get_json(&format!("/images/{uuid}"), &[]) {
            Ok(value) => Manifest::from_value(value).map(Some),
            Err(Error::Api { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `GET /images/UUID/file`, from `offset` with a Range request when
    /// `offset > 0`. The body is read as it arrives.
    pub fn get_file(&self, uuid: ImageUuid, offset: u64) -> Result<FileResponse> {
        let mut request = self.request(reqwest::Method::GET, &format!("/images/{uuid}/file"), &[]);
        if offset > 0 {
            request = request.header("range", format!("bytes={offset}-"));
        }
        let response = self.send(request)?;
        let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        Ok(FileResponse {
            partial: response.status() == StatusCode::PARTIAL_CONTENT,
            content_length: header("content-length").and_then(|v| v.parse().ok()),
            etag: header("etag").map(|e| e.trim_matches('"').to_string()),
            body: BodyReader { response, pending: bytes::Bytes::new(), url: self.spec.url.clone() },
        })
    }

    /// `POST /images/UUID?action=import` (AdminImportImage) with the
    /// manifest: the image exists on the server from here, unactivated and
    /// without a file.
    pub fn admin_import(&self, manifest: &Manifest) -> Result<Manifest> {
        let uuid = manifest.uuid()?;
        let request = self
            .request(reqwest::Method::POST, &format!("/images/{uuid}"), &[("action", "import".to_string())])
            .header("accept", "application/json")
            .json(&manifest.to_value());
        Manifest::from_value(self.json_answer(self.send(request)?)?)
    }

    /// `PUT /images/UUID/file?compression=&sha1=[&dataset_guid=]`
    /// (AddImageFile): the file is streamed from disk, never held in
    /// memory; `on_bytes` hears of every chunk as it goes out. Returns the
    /// manifest the server answers with (its `files[0]` as it computed it).
    pub fn add_file(
        &self,
        upload: &FileUpload,
        mut on_bytes: impl FnMut(u64) + Send + 'static,
    ) -> Result<Manifest> {
        let file = std::fs::File::open(&upload.path)
            .map_err(|e| Error::io_path("cannot open image file", &upload.path, e))?;
        let file = tokio::fs::File::from_std(file);
        let chunks = futures_util::stream::try_unfold(file, |mut file| async move {
            let mut chunk = vec![0u8; UPLOAD_CHUNK_BYTES];
            let n = tokio::io::AsyncReadExt::read(&mut file, &mut chunk).await?;
            if n == 0 {
                return Ok(None);
            }
            chunk.truncate(n);
            Ok::<_, std::io::Error>(Some((bytes::Bytes::from(chunk), file)))
        });
        let progress = Progress::default();
        let moved = progress.clone();
        let chunks = futures_util::StreamExt::inspect(chunks, move |chunk| {
            if let Ok(chunk) = chunk {
                moved.touch();
                on_bytes(chunk.len() as u64);
            }
        });
        let mut query = vec![("compression", upload.compression.clone()), ("sha1", upload.sha1.clone())];
        if let Some(guid) = &upload.dataset_guid {
            query.push(("dataset_guid", guid.clone()));
        }
        let request = self
            .request(reqwest::Method::PUT, &format!("/images/{}/file", upload.uuid), &query)
            .header("accept", "application/json")
            .header("content-type", "application/octet-stream")
            .header("content-length", upload.size)
            .body(reqwest::Body::wrap_stream(chunks));
        // The answer comes only once the whole file is sent: no limit on
        // the whole, but the upload must keep moving (the read timeout
        // after the last chunk the server took, or after the last one).
        Manifest::from_value(self.json_answer(self.send_watched(request, Wait::Progress(progress))?)?)
    }

    /// `POST /images/UUID?action=activate` (ActivateImage).
    pub fn activate(&self, uuid: ImageUuid) -> Result<Manifest> {
        let request = self
            .request(reqwest::Method::POST, &format!("/images/{uuid}"), &[("action", "activate".to_string())])
            .header("accept", "application/json");
        Manifest::from_value(self.json_answer(self.send(request)?)?)
    }

    /// `DELETE /images/UUID` (DeleteImage).
    pub fn delete_image(&self, uuid: ImageUuid) -> Result<()> {
        self.send(self.request(reqwest::Method::DELETE, &format!("/images/{uuid}"), &[]))?;
        Ok(())
    }
}

/// How often a running upload is checked for progress.
const UPLOAD_WATCH_INTERVAL: Duration = Duration::from_millis(500);

/// How long a request may take: until its answer, or as long as it moves.
enum Wait {
    Answer(Duration),
    Progress(Progress),
}

/// When an upload last handed the server a chunk.
#[derive(Clone)]
struct Progress(Arc<Mutex<Instant>>);

impl Default for Progress {
    fn default() -> Progress {
        Progress(Arc::new(Mutex::new(Instant::now())))
    }
}

impl Progress {
    fn touch(&self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    fn idle(&self) -> Duration {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).elapsed()
    }
}

/// How much of an uploaded file is read per chunk.
const UPLOAD_CHUNK_BYTES: usize = 256 * 1024;

/// What AddImageFile sends: the file and what the manifest says of it.
#[derive(Clone, Debug)]
pub struct FileUpload {
    pub uuid: ImageUuid,
    pub path: std::path::PathBuf,
    pub size: u64,
    pub sha1: String,
    pub compression: String,
    pub dataset_guid: Option<String>,
}

/// A ListImages page: its length, first and last uuid, and its images.
struct Page {
    len: usize,
    first: Option<String>,
    last: Option<String>,
    items: PageItems,
}

enum PageItems {
    /// Known to be an array of objects, not built yet.
    Unparsed(Vec<u8>),
    Parsed(Vec<Value>),
}

fn uuid_of(manifest: &Value) -> Option<&str> {
    manifest.get("uuid").and_then(Value::as_str)
}

/// reqwest's error with its causes (the top-level text alone says little).
fn describe_reqwest(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(inner) = cause {
        text.push_str(&format!(": {inner}"));
        cause = inner.source();
    }
    text
}

/// A response body as a blocking reader. A read that waits longer than the
/// read timeout fails with `TimedOut` (a stalled server); a cut connection
/// fails as reqwest reports it.
pub struct BodyReader {
    response: Response,
    pending: bytes::Bytes,
    url: String,
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pending.is_empty() {
            let rt = runtime().map_err(std::io::Error::other)?;
            let chunk = rt
                .block_on(async { tokio::time::timeout(read_timeout(), self.response.chunk()).await })
                .map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("{}: no data for {} s (stalled transfer)", self.url, read_timeout().as_secs_f64()),
                    )
                })?
                .map_err(|e| std::io::Error::other(format!("{}: {}", self.url, describe_reqwest(&e))))?;
            match chunk {
                Some(bytes) => self.pending = bytes,
                None => return Ok(0),
            }
        }
        let n = self.pending.len().min(buf.len());
        buf[..n].copy_from_slice(&self.pending[..n]);
        self.pending = self.pending.slice(n..);
        Ok(n)
    }
}
