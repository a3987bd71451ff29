//! A test Images API (IMGAPI) server that answers like a real sdc-imgapi
//! 4.13.1 in public mode, plus switches for the faults real deployments
//! have.
//!
//! What it is for: tests and benchmarks of the Rust imgadm's IMGAPI source
//! (list/paging, show, file download with checksums, resume, retries,
//! publish) without the network. The answers mirror the exchanges recorded
//! against a real server in
//! `reference/fixtures/imgapi-transcripts/` (status codes, the custom
//! headers, 2-space JSON, error bodies, `Accept-Version` views, channels,
//! the inclusive paging marker), and `tests/tests/imgapi_server.rs` replays
//! those transcripts against it.
//!
//! ```no_run
//! use imgadm_tests::imgapi_server::{FileCompression, TestImgapi};
//!
//! let server = TestImgapi::start();
//! server.add_image(
//!     serde_json::json!({"uuid": "01b2c898-945f-11e1-a523-af1afbe22822", "name": "smartos",
//!                        "version": "1.6.3", "type": "zone-dataset", "os": "smartos"}),
//!     b"...".to_vec(),
//!     FileCompression::Gzip,
//! );
//! server.cut_file_at(1_000); // every download now breaks off after 1000 bytes
//! println!("{}/images", server.url());
//! ```
//!
//! What it deliberately is not: a faithful manifest validator (it checks
//! only what the client-facing paths need: `v` on import, origins,
//! compression, sha1, sizes), a dc-mode server (no accounts, ACLs, jobs,
//! authentication or `inclAdminFields`), or complete (no CreateImage, icon
//! upload, UpdateImage, conditional requests, legacy `/datasets`). Error
//! messages that no transcript shows are plausible guesses. Files are kept in
//! memory. An anonymous caller of a public server only ever lists active
//! images, so `state=unactivated` and friends list nothing, as recorded.
//!
//! The server runs on its own thread with its own tokio runtime, so plain
//! `#[test]` functions (which also spawn the `imgadm` binary) can use it;
//! every switch can be flipped while it runs. Dropping it stops it and drops
//! every connection, stalled ones included.

mod faults;
mod file_body;
mod listing;
mod routes;
mod store;

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::StatusCode;
use axum::Router;
use bytes::Bytes;
use chrono::Utc;
use imgadm_engine::ids::ImageUuid;
use serde_json::{json, Value};
use tokio::sync::{oneshot, watch};

use faults::{BodyFault, Faults, InjectedFailure};
use store::{timestamp, ApiVersion, Store, StoredFile};

/// The sdc-imgapi version the transcripts were recorded from.
pub const SERVER_VERSION: &str = "4.13.1";

/// How an image file is compressed, as `files[].compression` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileCompression {
    Gzip,
    Bzip2,
    Xz,
    Uncompressed,
}

impl FileCompression {
    pub fn as_str(self) -> &'static str {
        match self {
            FileCompression::Gzip => "gzip",
            FileCompression::Bzip2 => "bzip2",
            FileCompression::Xz => "xz",
            FileCompression::Uncompressed => "none",
        }
    }

    pub fn parse(text: &str) -> Option<FileCompression> {
        Some(match text {
            "gzip" => FileCompression::Gzip,
            "bzip2" => FileCompression::Bzip2,
            "xz" => FileCompression::Xz,
            "none" => FileCompression::Uncompressed,
            _ => return None,
        })
    }
}

/// One entry of the server's channel list (`GET /channels`).
#[derive(Clone, Debug)]
pub struct Channel {
    pub name: String,
    pub description: String,
    pub default: bool,
}

impl Channel {
    pub fn new(name: &str, description: &str, default: bool) -> Channel {
        Channel {
            name: name.into(),
            description: description.into(),
            default,
        }
    }

    /// The channels of the recorded channel server (c01), which are those
    /// of updates.tritondatacenter.com: `dev` (default), `staging`, `release`.
    pub fn recorded_set() -> Vec<Channel> {
        vec![
            Channel::new("dev", "all development builds", true),
            Channel::new("staging", "staging builds", false),
            Channel::new("release", "release bits", false),
        ]
    }
}

/// A request as the server received it, for tests to assert on.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    pub path_and_query: String,
    /// Every request header, names in lower case, in arrival order.
    pub headers: Vec<(String, String)>,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// A running test IMGAPI server. See the module documentation.
pub struct TestImgapi {
    shared: Arc<Shared>,
    addr: SocketAddr,
    runtime: tokio::runtime::Handle,
    /// Stops the accept loop currently serving `addr` (`None` while down).
    stop_accepting: Mutex<Option<oneshot::Sender<()>>>,
    stop_runtime: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// What the handlers and the test thread share.
struct Shared {
    state: Mutex<ServerState>,
    /// Bumped whenever stalls are released; stalled downloads wait on it.
    stall_release: watch::Sender<u64>,
}

struct ServerState {
    store: Store,
    settings: Settings,
    faults: Faults,
    requests: Vec<RecordedRequest>,
    file_bytes_sent: HashMap<ImageUuid, u64>,
}

struct Settings {
    channels: Vec<Channel>,
    honour_range: bool,
    default_page_limit: Option<usize>,
    /// For `x-server-name`, which the real server fills with its host name.
    host_name: String,
}

impl Settings {
    fn default_channel(&self) -> Option<String> {
        self.channels
            .iter()
            .find(|channel| channel.default)
            .map(|channel| channel.name.clone())
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, ServerState> {
        // A panicking test thread must not take the server down with it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn record(&self, request: &Request) {
        let headers = request
            .headers()
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_string(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect();
        let path_and_query = request
            .uri()
            .path_and_query()
            .map_or_else(|| "/".into(), |pq| pq.to_string());
        self.lock().requests.push(RecordedRequest {
            method: request.method().to_string(),
            path_and_query,
            headers,
        });
    }

    fn count_file_bytes_sent(&self, uuid: ImageUuid, bytes: u64) {
        *self.lock().file_bytes_sent.entry(uuid).or_default() += bytes;
    }
}

impl TestImgapi {
    /// Starts a server on `127.0.0.1` on a free port. Panics if it cannot
    /// (a test cannot go on without it anyway).
    pub fn start() -> TestImgapi {
        TestImgapi::start_on(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("start the test IMGAPI server")
    }

    /// Starts a server listening on `addr` (port 0 picks a free one).
    pub fn start_on(addr: SocketAddr) -> io::Result<TestImgapi> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let (handle_sender, handle_receiver) = std::sync::mpsc::channel();
        let (stop_runtime, runtime_stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("test-imgapi-{}", addr.port()))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => return drop(handle_sender.send(Err(error))),
                };
                let _ = handle_sender.send(Ok(runtime.handle().clone()));
                runtime.block_on(async {
                    let _ = runtime_stopped.await;
                });
                // Dropping the runtime here cancels every connection task.
            })?;
        let runtime = handle_receiver
            .recv()
            .map_err(|_| io::Error::other("the server thread died while starting"))??;
        let host_name = nix::unistd::gethostname()
            .ok()
            .and_then(|name| name.into_string().ok())
            .unwrap_or_else(|| "localhost".into());
        let server = TestImgapi {
            shared: Arc::new(Shared {
                state: Mutex::new(ServerState {
                    store: Store::default(),
                    settings: Settings {
                        channels: Vec::new(),
                        honour_range: false,
                        default_page_limit: None,
                        host_name,
                    },
                    faults: Faults::default(),
                    requests: Vec::new(),
                    file_bytes_sent: HashMap::new(),
                }),
                stall_release: watch::Sender::new(0),
            }),
            addr,
            runtime,
            stop_accepting: Mutex::new(None),
            stop_runtime: Some(stop_runtime),
            thread: Some(thread),
        };
        server.serve(listener)?;
        Ok(server)
    }

    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn serve(&self, listener: TcpListener) -> io::Result<()> {
        listener.set_nonblocking(true)?;
        let _runtime = self.runtime.enter();
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let app = Router::new()
            .fallback(routes::handle)
            .with_state(Arc::clone(&self.shared));
        let (stop, stopped) = oneshot::channel::<()>();
        self.runtime.spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await;
        });
        *self
            .stop_accepting
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(stop);
        Ok(())
    }

    // ---- configuration ----

    /// Gives the server channels (an empty list: none, the default). Images
    /// added later land in the default channel unless their manifest names
    /// channels.
    pub fn set_channels(&self, channels: Vec<Channel>) {
        self.shared.lock().settings.channels = channels;
    }

    /// With `true`, `Range: bytes=N-` (or `N-M`) gets a 206 like a Go
    /// `http.ServeFile` server; by default Range is ignored (200, whole
    /// file), as sdc-imgapi does.
    pub fn honour_range(&self, honour: bool) {
        self.shared.lock().settings.honour_range = honour;
    }

    /// Default and maximum ListImages page size (`None`, the default: no
    /// cap, like sdc-imgapi's local backend; `Some(1000)`: like Moray).
    pub fn default_page_limit(&self, limit: Option<usize>) {
        self.shared.lock().settings.default_page_limit = limit;
    }

    // ---- images ----

    /// Stores an active image with `file` as its file; sha1, size and md5
    /// are computed here (a `files[0].dataset_guid` in `manifest` is kept).
    /// `manifest` needs a `uuid`; `v` (2), `owner`
    /// (zeros), `disabled` (false), `public` (true), `published_at` (now)
    /// and, with channels, `channels` (the default one) are filled in when
    /// missing; `state` and `files` are replaced. Returns the manifest as
    /// GetImage (v2) shows it. Replaces an image of the same uuid.
    pub fn add_image(
        &self,
        manifest: Value,
        file: impl Into<Bytes>,
        compression: FileCompression,
    ) -> Value {
        let dataset_guid = manifest
            .pointer("/files/0/dataset_guid")
            .and_then(Value::as_str)
            .map(String::from);
        let file = StoredFile::new(file.into(), compression, dataset_guid);
        self.insert(manifest, "active", Some(file))
    }

    /// Stores an image as AdminImportImage leaves it: unactivated, no file.
    /// Fills in defaults like [`TestImgapi::add_image`].
    pub fn add_unactivated(&self, manifest: Value) -> Value {
        self.insert(manifest, "unactivated", None)
    }

    fn insert(&self, manifest: Value, state_name: &str, file: Option<StoredFile>) -> Value {
        let Value::Object(mut manifest) = manifest else {
            panic!("a manifest must be a JSON object, got {manifest}");
        };
        let uuid = manifest
            .get("uuid")
            .and_then(Value::as_str)
            .and_then(|text| ImageUuid::parse(text).ok())
            .unwrap_or_else(|| panic!("the manifest needs a lower-case uuid: {manifest:?}"));
        let mut state = self.shared.lock();
        for (field, default) in [
            ("v", json!(2)),
            ("owner", json!("00000000-0000-0000-0000-000000000000")),
            ("disabled", json!(false)),
            ("public", json!(true)),
        ] {
            manifest.entry(field).or_insert(default);
        }
        if state_name == "active" {
            manifest
                .entry("published_at")
                .or_insert_with(|| timestamp(Utc::now()).into());
        }
        manifest.insert("state".into(), state_name.into());
        match state.settings.default_channel() {
            Some(default) => {
                manifest
                    .entry("channels")
                    .or_insert_with(|| json!([default]));
            }
            None => {
                manifest.remove("channels");
            }
        }
        state
            .store
            .insert(uuid, manifest, file)
            .view(ApiVersion::V2)
    }

    /// The manifest as GetImage (v2) would show it, whatever its state.
    pub fn manifest(&self, uuid: &ImageUuid) -> Option<Value> {
        self.shared
            .lock()
            .store
            .get(uuid)
            .map(|image| image.view(ApiVersion::V2))
    }

    // ---- faults ----

    /// Every file response ends after `bytes` body bytes: the connection is
    /// dropped, the client sees a short body. Until [`TestImgapi::clear_faults`].
    pub fn cut_file_at(&self, bytes: u64) {
        self.shared.lock().faults.cut = Some(BodyFault {
            after_bytes: bytes,
            remaining: None,
        });
    }

    /// Like [`TestImgapi::cut_file_at`] for the next file response only (a
    /// retry or resume then gets the whole thing).
    pub fn cut_next_file_at(&self, bytes: u64) {
        self.shared.lock().faults.cut = Some(BodyFault {
            after_bytes: bytes,
            remaining: Some(1),
        });
    }

    /// Every file response sends `bytes` body bytes, then nothing more while
    /// holding the connection open, until the switch is cleared
    /// ([`TestImgapi::clear_faults`]) or the server is dropped.
    pub fn stall_file_at(&self, bytes: u64) {
        self.shared.lock().faults.stall = Some(BodyFault {
            after_bytes: bytes,
            remaining: None,
        });
    }

    /// Like [`TestImgapi::stall_file_at`] for the next file response only.
    pub fn stall_next_file_at(&self, bytes: u64) {
        self.shared.lock().faults.stall = Some(BodyFault {
            after_bytes: bytes,
            remaining: Some(1),
        });
    }

    /// File uploads (`PUT /images/:uuid/file`) are neither read nor
    /// answered, the connection held open, until
    /// [`TestImgapi::clear_faults`] or the server is dropped.
    pub fn stall_uploads(&self) {
        self.shared.lock().faults.stall_uploads = true;
    }

    /// Flips (xor 0xff) the file byte at `offset` in every download; the
    /// headers still advertise the true checksums.
    pub fn corrupt_file_byte(&self, offset: u64) {
        self.shared.lock().faults.corrupt_offset = Some(offset);
    }

    /// The next `count` requests, whatever they are, get `status` with an
    /// IMGAPI error body (500: `InternalError`, 503: `ServiceUnavailableError`).
    pub fn fail_next(&self, count: u32, status: u16) {
        self.shared.lock().faults.fail_requests = Some(InjectedFailure {
            remaining: count,
            status: status_code(status),
        });
    }

    /// The next `count` file downloads (`GET /images/:uuid/file`) get `status`.
    pub fn fail_next_file_requests(&self, count: u32, status: u16) {
        self.shared.lock().faults.fail_file_requests = Some(InjectedFailure {
            remaining: count,
            status: status_code(status),
        });
    }

    /// Turns every switch off and releases stalled downloads.
    pub fn clear_faults(&self) {
        self.shared.lock().faults = Faults::default();
        self.shared
            .stall_release
            .send_modify(|generation| *generation += 1);
    }

    /// The image's file changes on the server, as when a mirror re-syncs:
    /// new bytes, and with them a new sha1, size, Etag and Last-Modified in
    /// the manifest and file headers. Panics if there is no such image.
    pub fn replace_file(&self, uuid: &ImageUuid, file: impl Into<Bytes>) {
        let mut state = self.shared.lock();
        let image = state
            .store
            .get_mut(uuid)
            .unwrap_or_else(|| panic!("no image {uuid} on the test server"));
        let (compression, dataset_guid) = match &image.file {
            Some(old) => (old.compression, old.dataset_guid.clone()),
            None => (FileCompression::Uncompressed, None),
        };
        image.set_file(Some(StoredFile::new(
            file.into(),
            compression,
            dataset_guid,
        )));
    }

    /// The source dies: the listening socket is closed, so connecting is
    /// refused; idle keep-alive connections are closed too. Returns once a
    /// connection attempt is refused.
    pub fn down(&self) {
        let stop = self
            .stop_accepting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(stop) = stop else { return };
        let _ = stop.send(());
        // The accept loop drops its listener asynchronously; wait for it.
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(self.addr).is_ok() {
            assert!(
                Instant::now() < deadline,
                "the test IMGAPI server kept accepting after down()"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The source comes back on the same address.
    pub fn up(&self) {
        if self
            .stop_accepting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
        {
            return;
        }
        let listener =
            TcpListener::bind(self.addr).expect("re-bind the test IMGAPI server's address");
        self.serve(listener).expect("serve again");
    }

    // ---- accounting ----

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// File body bytes handed to connections for this image so far, over
    /// all responses, partial ones included. Bytes of the last chunk may
    /// still sit in buffers if the client hung up, so this is an upper
    /// bound of what reached the client.
    pub fn file_bytes_sent(&self, uuid: &ImageUuid) -> u64 {
        self.shared
            .lock()
            .file_bytes_sent
            .get(uuid)
            .copied()
            .unwrap_or(0)
    }
}

fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or_else(|_| panic!("{status} is not an HTTP status"))
}

impl Drop for TestImgapi {
    fn drop(&mut self) {
        if let Some(stop) = self.stop_runtime.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
