//! Request handling: one dispatcher that matches the routes sdc-imgapi has,
//! then one function per endpoint. Errors that the real server's router
//! produces on its own (unknown path, wrong method, unsatisfiable
//! `Accept-Version`) carry none of its custom headers; everything a handler
//! answers does, exactly as in the recorded transcripts.

use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use chrono::Utc;
use imgadm_engine::ids::ImageUuid;
use serde_json::{json, Map, Value};
use sha1::{Digest, Sha1};

use super::file_body::{self, FileDownload};
use super::listing::ListQuery;
use super::store::{timestamp, ApiVersion, Store, StoredFile, StoredImage};
use super::{FileCompression, Settings, Shared, SERVER_VERSION};

/// Owner that AdminImportImage writes into every image outside dc mode.
const ZERO_OWNER: &str = "00000000-0000-0000-0000-000000000000";

pub(super) async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let started = Instant::now();
    // restify takes the caller's request id when there is one.
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .map(String::from)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    shared.record(&request);
    let response = respond(&shared, request).await;
    if response.extensions().get::<RouterLevel>().is_some() {
        return response;
    }
    let host_name = shared.lock().settings.host_name.clone();
    decorate(response, &request_id, started, &host_name)
}

/// Marks a response as produced by the router rather than a handler.
#[derive(Clone, Copy)]
struct RouterLevel;

fn decorate(
    mut response: Response,
    request_id: &str,
    started: Instant,
    host_name: &str,
) -> Response {
    let headers = response.headers_mut();
    let mut set = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    };
    set("server", format!("imgapi/{SERVER_VERSION}"));
    set("x-request-id", request_id.to_string());
    set("x-response-time", started.elapsed().as_millis().to_string());
    set("x-server-name", host_name.to_string());
    response
}

enum Route {
    Ping,
    Images,
    Image(String),
    ImageFile(String),
    ImageIcon(String),
    Channels,
}

impl Route {
    fn parse(path: &str, has_channels: bool) -> Option<Route> {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        Some(match segments.as_slice() {
            ["ping"] => Route::Ping,
            ["images"] => Route::Images,
            ["images", id] if !id.is_empty() => Route::Image(id.to_string()),
            ["images", id, "file"] => Route::ImageFile(id.to_string()),
            ["images", id, "icon"] => Route::ImageIcon(id.to_string()),
            // sdc-imgapi only mounts ListChannels when it has channels.
            ["channels"] if has_channels => Route::Channels,
            _ => return None,
        })
    }

    /// In the order restify lists them in `Allow` (recorded: "PUT, GET").
    /// CreateImage (`POST /images`) and icon uploads are not implemented.
    fn allowed_methods(&self) -> &'static [Method] {
        match self {
            Route::Image(_) => &[Method::GET, Method::POST, Method::DELETE],
            Route::ImageFile(_) => &[Method::PUT, Method::GET],
            Route::Ping | Route::Images | Route::ImageIcon(_) | Route::Channels => &[Method::GET],
        }
    }
}

async fn respond(shared: &Arc<Shared>, request: Request) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let route = Route::parse(&path, !shared.lock().settings.channels.is_empty());
    let is_file_download = matches!(route, Some(Route::ImageFile(_))) && method == Method::GET;
    if let Some(status) = shared.lock().faults.take_failure(is_file_download) {
        return ApiError::injected(status).into_response();
    }

    let Some(route) = route else {
        return router_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            format!("{path} does not exist"),
        );
    };
    let allowed = route.allowed_methods();
    if !allowed.contains(&method) {
        let mut response = router_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowedError",
            format!("{method} is not allowed"),
        );
        let allow = allowed
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        response.headers_mut().insert(
            header::ALLOW,
            HeaderValue::from_str(&allow).expect("method names"),
        );
        return response;
    }
    let accept_version = request
        .headers()
        .get("accept-version")
        .and_then(|v| v.to_str().ok());
    let Some(version) = negotiate_version(accept_version) else {
        let range = accept_version.unwrap_or_default();
        return router_error(
            StatusCode::BAD_REQUEST,
            "InvalidVersion",
            format!("{range} is not supported by {method} {path}"),
        );
    };

    let result = match Params::from_request(&request) {
        Err(error) => Err(error),
        Ok(params) => match route {
            Route::Ping => ping(&params),
            Route::Images => list_images(shared, &params, version),
            Route::Channels => list_channels(shared),
            Route::Image(id) => match method {
                Method::GET => get_image(shared, &path, &id, &params, version),
                Method::DELETE => delete_image(shared, &path, &id, &params),
                _ => image_action(shared, &path, &id, &params, version, request).await,
            },
            Route::ImageFile(id) => match method {
                Method::GET => get_image_file(shared, &path, &id, &params, request.headers()),
                _ => add_image_file(shared, &path, &id, &params, version, request).await,
            },
            Route::ImageIcon(id) => get_image_icon(shared, &path, &id, &params),
        },
    };
    result.unwrap_or_else(ApiError::into_response)
}

/// Picks the API view from `Accept-Version` the way restify does with the
/// two versions sdc-imgapi serves: the highest that satisfies the range;
/// no header means `~1`. `None` when nothing satisfies it.
fn negotiate_version(accept_version: Option<&str>) -> Option<ApiVersion> {
    let Some(range) = accept_version
        .map(str::trim)
        .filter(|range| !range.is_empty())
    else {
        return Some(ApiVersion::V1);
    };
    [(ApiVersion::V2, 2), (ApiVersion::V1, 1)]
        .into_iter()
        .find(|(_, major)| {
            range
                .split_whitespace()
                .all(|comparator| satisfies(*major, comparator))
        })
        .map(|(version, _)| version)
}

/// Whether `major.0.0` satisfies one semver comparator such as `~2`,
/// `>=1.0`, `^2.0.0` or `*`.
fn satisfies(major: u64, comparator: &str) -> bool {
    let (operator, version) =
        match comparator.find(|c: char| c.is_ascii_digit() || c == '*' || c == 'x') {
            Some(at) => comparator.split_at(at),
            None => return false,
        };
    let operator = operator.trim();
    let parts: Vec<&str> = version.split('.').collect();
    if parts.len() > 3 || parts[0] == "*" || parts[0] == "x" {
        return parts.len() <= 3 && operator.is_empty();
    }
    let mut numbers = Vec::new();
    for part in &parts {
        match part.parse::<u64>() {
            Ok(number) => numbers.push(number),
            Err(_) if *part == "x" || *part == "*" => break,
            Err(_) => return false,
        }
    }
    // The candidate is major.0.0; a version with a non-zero minor or patch
    // is above it within the same major.
    let candidate = (major, 0, 0);
    let low = (
        numbers[0],
        *numbers.get(1).unwrap_or(&0),
        *numbers.get(2).unwrap_or(&0),
    );
    // Upper bound of a partial version ("1" is 1.x.x, "1.2" is 1.2.x).
    let high = match numbers.len() {
        1 => (numbers[0] + 1, 0, 0),
        2 => (numbers[0], numbers[1] + 1, 0),
        _ => (numbers[0], numbers[1], numbers[2] + 1),
    };
    match operator {
        "" | "=" => low <= candidate && candidate < high,
        "~" => {
            let upper = match numbers.len() {
                1 => (numbers[0] + 1, 0, 0),
                _ => (numbers[0], numbers[1] + 1, 0),
            };
            low <= candidate && candidate < upper
        }
        "^" => low <= candidate && candidate < (numbers[0] + 1, 0, 0),
        ">=" => candidate >= low,
        ">" => candidate >= high,
        "<" => candidate < low,
        "<=" => candidate < high,
        _ => false,
    }
}

/// The query string as decoded pairs (repeated keys stay separate).
pub(super) struct Params(Vec<(String, String)>);

impl Params {
    fn from_request(request: &Request) -> Result<Params, ApiError> {
        Query::<Vec<(String, String)>>::try_from_uri(request.uri())
            .map(|Query(pairs)| Params(pairs))
            .map_err(|error| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "InvalidParameter",
                    error.to_string(),
                )
            })
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()))
    }
}

/// Which channel a request is about.
pub(super) enum ChannelScope {
    /// The server has no channels (the `channel` parameter is ignored).
    Unchanneled,
    One(String),
    /// `channel=*`
    All,
}

impl ChannelScope {
    fn of(settings: &Settings, params: &Params) -> Result<ChannelScope, ApiError> {
        if settings.channels.is_empty() {
            return Ok(ChannelScope::Unchanneled);
        }
        match params.get("channel") {
            Some("*") => Ok(ChannelScope::All),
            Some(name) if settings.channels.iter().any(|c| c.name == name) => {
                Ok(ChannelScope::One(name.into()))
            }
            Some(name) => Err(ApiError::unknown_channel(name)),
            None => match settings.channels.iter().find(|c| c.default) {
                Some(default) => Ok(ChannelScope::One(default.name.clone())),
                None => Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "ValidationFailed",
                    "no channel given and the server has no default channel".into(),
                )
                .with_errors(vec![field_error("channel", "Missing")])),
            },
        }
    }

    pub fn admits(&self, image: &StoredImage) -> bool {
        match self {
            ChannelScope::Unchanneled | ChannelScope::All => true,
            ChannelScope::One(name) => image.in_channel(name),
        }
    }
}

/// An error answer: `{"code", "message"}` plus `errors` for validation.
pub(super) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    errors: Option<Vec<Value>>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: String) -> ApiError {
        ApiError {
            status,
            code,
            message,
            errors: None,
        }
    }

    pub fn with_errors(mut self, errors: Vec<Value>) -> ApiError {
        self.errors = Some(errors);
        self
    }

    pub fn invalid_parameter(field: &str, message: String) -> ApiError {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "InvalidParameter",
            message,
        )
        .with_errors(vec![field_error(field, "Invalid")])
    }

    fn not_found(message: String) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "ResourceNotFound", message)
    }

    fn unprocessable(code: &'static str, message: String) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    fn download(message: String) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "Download", message)
    }

    fn unknown_channel(name: &str) -> ApiError {
        ApiError::unprocessable("ValidationFailed", format!("unknown channel: {name}"))
            .with_errors(vec![field_error("channel", "Invalid")])
    }

    fn injected(status: StatusCode) -> ApiError {
        let code = match status.as_u16() {
            501 => "NotAvailable",
            503 => "ServiceUnavailableError",
            _ => "InternalError",
        };
        ApiError::new(
            status,
            code,
            "injected failure (TestImgapi::fail_next)".into(),
        )
    }

    fn into_response(self) -> Response {
        let mut body = Map::new();
        body.insert("code".into(), self.code.into());
        body.insert("message".into(), self.message.into());
        if let Some(errors) = self.errors {
            body.insert("errors".into(), Value::Array(errors));
        }
        json_response(self.status, &Value::Object(body))
    }
}

pub(super) fn field_error(field: &str, code: &str) -> Value {
    json!({ "field": field, "code": code })
}

fn router_error(status: StatusCode, code: &'static str, message: String) -> Response {
    let mut response = ApiError::new(status, code, message).into_response();
    response.extensions_mut().insert(RouterLevel);
    response
}

/// JSON the way restify writes it: 2-space indented, no trailing newline.
fn json_response(status: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec_pretty(body).expect("JSON values serialize");
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, bytes.len())
        .body(Body::from(bytes))
        .expect("valid response")
}

/// A manifest with the `Etag` sdc-imgapi puts on it (a hash of the manifest).
fn manifest_response(image: &StoredImage, version: ApiVersion) -> Response {
    let view = image.view(version);
    let etag = hex::encode(Sha1::digest(
        serde_json::to_vec(&view).expect("JSON values serialize"),
    ));
    let mut response = json_response(StatusCode::OK, &view);
    response
        .headers_mut()
        .insert(header::ETAG, HeaderValue::from_str(&etag).expect("hex"));
    response
}

/// A non-UUID `:uuid` is a 404 naming the path (transcript 18).
fn parse_image_id(path: &str, id: &str) -> Result<ImageUuid, ApiError> {
    ImageUuid::parse(id).map_err(|_| ApiError::not_found(format!("{path} does not exist")))
}

fn find<'a>(
    store: &'a Store,
    uuid: &ImageUuid,
    scope: &ChannelScope,
) -> Result<&'a StoredImage, ApiError> {
    let image = store
        .get(uuid)
        .ok_or_else(|| ApiError::not_found(format!("image {uuid} not found")))?;
    if !scope.admits(image) {
        // Recorded as-is (c04): no uuid in this message.
        return Err(ApiError::not_found("image not found".into()));
    }
    Ok(image)
}

fn find_mut<'a>(
    store: &'a mut Store,
    uuid: &ImageUuid,
    scope: &ChannelScope,
) -> Result<&'a mut StoredImage, ApiError> {
    find(store, uuid, scope)?;
    Ok(store.get_mut(uuid).expect("found just above"))
}

type Reply = Result<Response, ApiError>;

fn ping(params: &Params) -> Reply {
    match params.get("error") {
        None => Ok(json_response(
            StatusCode::OK,
            &json!({ "ping": "pong", "version": SERVER_VERSION, "imgapi": true }),
        )),
        // The one error with a built-in sample in sdc-imgapi's ping.
        Some("ValidationFailed") => Err(ApiError::unprocessable(
            "ValidationFailed",
            params.get("message").unwrap_or("boom").into(),
        )
        .with_errors(vec![])),
        Some(name) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            format!("do not have a sample \"{name}Error\" error"),
        )),
    }
}

fn list_images(shared: &Shared, params: &Params, version: ApiVersion) -> Reply {
    let query = ListQuery::parse(params)?;
    let state = shared.lock();
    let scope = ChannelScope::of(&state.settings, params)?;
    let images = query.select(&state.store, &scope, state.settings.default_page_limit)?;
    let views = images
        .into_iter()
        .map(|image| image.view(version))
        .collect();
    Ok(json_response(StatusCode::OK, &Value::Array(views)))
}

fn list_channels(shared: &Shared) -> Reply {
    let state = shared.lock();
    let channels = state.settings.channels.iter().map(|channel| {
        let mut entry = Map::new();
        entry.insert("name".into(), channel.name.clone().into());
        entry.insert("description".into(), channel.description.clone().into());
        if channel.default {
            entry.insert("default".into(), true.into());
        }
        Value::Object(entry)
    });
    Ok(json_response(
        StatusCode::OK,
        &Value::Array(channels.collect()),
    ))
}

fn get_image(shared: &Shared, path: &str, id: &str, params: &Params, version: ApiVersion) -> Reply {
    let uuid = parse_image_id(path, id)?;
    let state = shared.lock();
    let scope = ChannelScope::of(&state.settings, params)?;
    Ok(manifest_response(
        find(&state.store, &uuid, &scope)?,
        version,
    ))
}

fn get_image_icon(shared: &Shared, path: &str, id: &str, params: &Params) -> Reply {
    let uuid = parse_image_id(path, id)?;
    let state = shared.lock();
    let scope = ChannelScope::of(&state.settings, params)?;
    find(&state.store, &uuid, &scope)?;
    Err(ApiError::not_found(format!("image \"{uuid}\" has no icon")))
}

fn get_image_file(
    shared: &Arc<Shared>,
    path: &str,
    id: &str,
    params: &Params,
    headers: &HeaderMap,
) -> Reply {
    let uuid = parse_image_id(path, id)?;
    let mut state = shared.lock();
    let scope = ChannelScope::of(&state.settings, params)?;
    let image = find(&state.store, &uuid, &scope)?;
    let file = match (&image.file, params.get("index").unwrap_or("0")) {
        (Some(file), "0") => file.clone(),
        _ => return Err(ApiError::not_found(format!("image \"{uuid}\" has no file"))),
    };
    let size = file.bytes.len() as u64;
    let honour_range = state.settings.honour_range;
    let requested = if honour_range {
        requested_range(headers, size)
    } else {
        None
    };
    let range = match requested {
        Some(Err(RangeNotSatisfiable)) => {
            return Ok(Response::builder()
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{size}"))
                .body(Body::empty())
                .expect("valid response"));
        }
        Some(Ok(range)) => Some(range),
        None => None,
    };
    let faults = state.faults.take_for_file_response();
    drop(state);

    let mut response = Response::builder()
        .header(header::ETAG, &file.sha1)
        .header(
            header::LAST_MODIFIED,
            file.uploaded_at
                .format("%a, %d %b %Y %H:%M:%S GMT")
                .to_string(),
        )
        .header(header::CONTENT_TYPE, "application/octet-stream");
    if honour_range {
        response = response.header(header::ACCEPT_RANGES, "bytes");
    }
    let served = match &range {
        Some(range) => {
            response = response.status(StatusCode::PARTIAL_CONTENT).header(
                header::CONTENT_RANGE,
                format!("bytes {}-{}/{size}", range.start, range.end - 1),
            );
            range.clone()
        }
        None => {
            // Content-MD5 describes the whole file, so only a full response carries it.
            response = response
                .status(StatusCode::OK)
                .header("content-md5", &file.md5_base64);
            0..size
        }
    };
    let response = response.header(header::CONTENT_LENGTH, served.end - served.start);
    let download = FileDownload {
        uuid,
        file: file.bytes,
        range: served,
        faults,
    };
    Ok(response
        .body(file_body::body(Arc::clone(shared), download))
        .expect("valid response"))
}

struct RangeNotSatisfiable;

/// A single `bytes=N-` or `bytes=N-M` range; anything else (several ranges,
/// suffix ranges, junk) is ignored and the whole file served, as most
/// servers do.
fn requested_range(
    headers: &HeaderMap,
    size: u64,
) -> Option<Result<Range<u64>, RangeNotSatisfiable>> {
    let spec = headers
        .get(header::RANGE)?
        .to_str()
        .ok()?
        .trim()
        .strip_prefix("bytes=")?;
    let (first, last) = spec.split_once('-')?;
    let first: u64 = first.trim().parse().ok()?;
    let last = match last.trim() {
        "" => size.saturating_sub(1),
        last => last.parse::<u64>().ok()?.min(size.saturating_sub(1)),
    };
    if first >= size || last < first {
        return Some(Err(RangeNotSatisfiable));
    }
    Some(Ok(first..last + 1))
}

async fn add_image_file(
    shared: &Shared,
    path: &str,
    id: &str,
    params: &Params,
    version: ApiVersion,
    request: Request,
) -> Reply {
    let uuid = parse_image_id(path, id)?;
    let compression = match params.get("compression") {
        None => {
            return Err(ApiError::unprocessable(
                "InvalidParameter",
                "missing \"compression\"".into(),
            )
            .with_errors(vec![field_error("compression", "Missing")]))
        }
        Some(text) => FileCompression::parse(text).ok_or_else(|| {
            ApiError::invalid_parameter(
                "compression",
                format!("invalid compression \"{text}\" (must be one of: bzip2, gzip, none, xz)"),
            )
        })?,
    };
    let scope = {
        let state = shared.lock();
        let scope = ChannelScope::of(&state.settings, params)?;
        if find(&state.store, &uuid, &scope)?.is_activated() {
            return Err(ApiError::unprocessable(
                "ImageFilesImmutable",
                format!("cannot modify files on activated image {uuid}"),
            ));
        }
        scope
    };

    if shared.lock().faults.stall_uploads {
        let mut release = shared.stall_release.subscribe();
        let generation = *release.borrow_and_update();
        while *release.borrow_and_update() == generation {
            if release.changed().await.is_err() {
                break;
            }
        }
        return Err(ApiError::download("the upload was stalled by the test".into()));
    }
    let declared_length = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<usize>().ok());
    let received = axum::body::to_bytes(request.into_body(), usize::MAX)
        .await
        .map_err(|error| ApiError::download(format!("error receiving image file: {error}")))?;
    if let Some(declared) = declared_length.filter(|declared| *declared != received.len()) {
        return Err(ApiError::download(format!(
            "\"Content-Length\" header, {declared}, does not match uploaded size, {}",
            received.len()
        )));
    }
    if received.is_empty() {
        return Err(ApiError::download("empty files are not allowed".into()));
    }
    let file = StoredFile::new(
        received,
        compression,
        params.get("dataset_guid").map(String::from),
    );
    if let Some(expected) = params.get("sha1").filter(|expected| *expected != file.sha1) {
        return Err(ApiError::download(format!(
            "\"sha1\" hash, {expected}, does not match the uploaded file sha1 hash, {}",
            file.sha1
        )));
    }

    let mut state = shared.lock();
    let image = find_mut(&mut state.store, &uuid, &scope)?;
    image.set_file(Some(file));
    Ok(manifest_response(image, version))
}

fn delete_image(shared: &Shared, path: &str, id: &str, params: &Params) -> Reply {
    let uuid = parse_image_id(path, id)?;
    let mut state = shared.lock();
    let scope = ChannelScope::of(&state.settings, params)?;
    let image = find_mut(&mut state.store, &uuid, &scope)?;
    // With several channels, naming one only takes the image out of it (c08).
    let mut channels = image.channels();
    if let ChannelScope::One(channel) = &scope {
        if channels.len() > 1 && params.get("force_all_channels") != Some("true") {
            channels.retain(|name| name != channel);
            image.set_field("channels", json!(channels));
            return Ok(no_content());
        }
    }
    if state.store.has_dependents(&uuid) {
        return Err(ApiError::unprocessable(
            "ImageHasDependentImages",
            format!("image \"{uuid}\" has dependent images"),
        ));
    }
    state.store.remove(&uuid);
    Ok(no_content())
}

fn no_content() -> Response {
    Response::builder()
        .status(StatusCode::NO_CONTENT)
        .body(Body::empty())
        .expect("valid response")
}

async fn image_action(
    shared: &Shared,
    path: &str,
    id: &str,
    params: &Params,
    version: ApiVersion,
    request: Request,
) -> Reply {
    let uuid = parse_image_id(path, id)?;
    let action = params.get("action").ok_or_else(|| {
        ApiError::unprocessable(
            "InvalidParameter",
            "no image \"action\" was specified".into(),
        )
    })?;
    match action {
        "import" => {
            let manifest = read_json_object(request).await?;
            import_image(shared, uuid, params, version, manifest)
        }
        "activate" | "enable" | "disable" => change_state(shared, uuid, params, version, action),
        "channel-add" => {
            let body = read_json_object(request).await?;
            add_to_channel(shared, uuid, params, version, body)
        }
        other => Err(ApiError::unprocessable(
            "InvalidParameter",
            format!("\"{other}\" is not a valid action"),
        )),
    }
}

async fn read_json_object(request: Request) -> Result<Map<String, Value>, ApiError> {
    let invalid = |detail: String| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidContent",
            format!("Invalid JSON: {detail}"),
        )
    };
    let bytes = axum::body::to_bytes(request.into_body(), usize::MAX)
        .await
        .map_err(|error| invalid(error.to_string()))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(invalid("not an object".into())),
        Err(error) => Err(invalid(error.to_string())),
    }
}

/// AdminImportImage as a non-dc server does it: the caller's uuid and
/// `published_at` are kept, `state` and `files` dropped, the owner zeroed.
fn import_image(
    shared: &Shared,
    uuid: ImageUuid,
    params: &Params,
    version: ApiVersion,
    mut manifest: Map<String, Value>,
) -> Reply {
    let mut state = shared.lock();
    let scope = ChannelScope::of(&state.settings, params)?;
    if state.store.contains(&uuid) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "ImageUuidAlreadyExists",
            format!("image uuid \"{uuid}\" already exists"),
        ));
    }
    if !manifest.contains_key("v") {
        return Err(
            ApiError::unprocessable("ValidationFailed", "invalid image data: v".into())
                .with_errors(vec![field_error("v", "MissingParameter")]),
        );
    }
    if let Some(body_uuid) = manifest.get("uuid").and_then(Value::as_str) {
        if body_uuid != uuid.to_string() {
            return Err(ApiError::invalid_parameter(
                "uuid",
                format!("manifest uuid \"{body_uuid}\" does not match the url uuid \"{uuid}\""),
            ));
        }
    }
    if let Some(origin) = manifest.get("origin").and_then(Value::as_str) {
        let known = ImageUuid::parse(origin).is_ok_and(|origin| state.store.contains(&origin));
        if !known {
            return Err(ApiError::unprocessable(
                "OriginDoesNotExist",
                format!("origin image \"{origin}\" does not exist"),
            ));
        }
    }
    manifest.remove("files");
    manifest.insert("uuid".into(), uuid.to_string().into());
    manifest.insert("owner".into(), ZERO_OWNER.into());
    manifest.insert("state".into(), "unactivated".into());
    manifest.entry("disabled").or_insert(false.into());
    manifest.entry("public").or_insert(false.into());
    let channel = match scope {
        ChannelScope::Unchanneled => None,
        ChannelScope::One(name) => Some(name),
        ChannelScope::All => state.settings.default_channel(),
    };
    match channel {
        Some(name) => manifest.insert("channels".into(), json!([name])),
        None => manifest.remove("channels"),
    };
    let image = state.store.insert(uuid, manifest, None);
    Ok(manifest_response(image, version))
}

fn change_state(
    shared: &Shared,
    uuid: ImageUuid,
    params: &Params,
    version: ApiVersion,
    action: &str,
) -> Reply {
    let mut state = shared.lock();
    let scope = ChannelScope::of(&state.settings, params)?;
    let image = find_mut(&mut state.store, &uuid, &scope)?;
    let disabled = match action {
        "activate" => {
            if image.is_activated() {
                return Err(ApiError::unprocessable(
                    "ImageAlreadyActivated",
                    format!("image \"{uuid}\" is already activated"),
                ));
            }
            if image.file.is_none() {
                return Err(ApiError::unprocessable(
                    "NoActivationNoFile",
                    format!("image \"{uuid}\" cannot be activated: it has no file"),
                ));
            }
            if !image.manifest.contains_key("published_at") {
                image.set_field("published_at", timestamp(Utc::now()).into());
            }
            image.is_disabled()
        }
        "disable" => true,
        _ => false,
    };
    // An image is activated once; after that `state` follows `disabled`.
    let activated = action == "activate" || image.is_activated();
    image.set_field("disabled", disabled.into());
    let new_state = match (activated, disabled) {
        (false, _) => "unactivated",
        (true, true) => "disabled",
        (true, false) => "active",
    };
    image.set_field("state", new_state.into());
    Ok(manifest_response(image, version))
}

fn add_to_channel(
    shared: &Shared,
    uuid: ImageUuid,
    params: &Params,
    version: ApiVersion,
    body: Map<String, Value>,
) -> Reply {
    let mut state = shared.lock();
    let scope = ChannelScope::of(&state.settings, params)?;
    let Some(channel) = body.get("channel").and_then(Value::as_str) else {
        return Err(
            ApiError::unprocessable("InvalidParameter", "missing \"channel\"".into())
                .with_errors(vec![field_error("channel", "Missing")]),
        );
    };
    if !state
        .settings
        .channels
        .iter()
        .any(|known| known.name == channel)
    {
        return Err(ApiError::unknown_channel(channel));
    }
    let image = find_mut(&mut state.store, &uuid, &scope)?;
    let mut channels = image.channels();
    if !channels.iter().any(|name| name == channel) {
        channels.push(channel.into());
        image.set_field("channels", json!(channels));
    }
    Ok(manifest_response(image, version))
}

#[cfg(test)]
mod tests {
    use super::{negotiate_version, ApiVersion};

    #[test]
    fn accept_version_picks_the_view_like_restify() {
        for (range, expected) in [
            (None, Some(ApiVersion::V1)),
            (Some("~1"), Some(ApiVersion::V1)),
            (Some("1.0.0"), Some(ApiVersion::V1)),
            (Some("~2"), Some(ApiVersion::V2)),
            (Some("2.0.0"), Some(ApiVersion::V2)),
            (Some("*"), Some(ApiVersion::V2)),
            (Some(">=1"), Some(ApiVersion::V2)),
            (Some("^1.0.0"), Some(ApiVersion::V1)),
            (Some("<2"), Some(ApiVersion::V1)),
            (Some("~99"), None),
            (Some("2.1.0"), None),
            (Some("banana"), None),
        ] {
            assert_eq!(
                negotiate_version(range),
                expected,
                "Accept-Version: {range:?}"
            );
        }
    }
}
