//! The read-only verbs: `list`, `get`, `ancestry`. They read the pools and
//! the manifest cache; they take no lock and write nothing.

use serde_json::{json, Value};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::ids::{ImageUuid, PoolName};
use crate::images::{ImageInfo, PoolImages};

/// Below this many images a second thread costs more than it saves.
const IMAGES_PER_THREAD: usize = 64;

/// Every image on every imported pool of the driver (or on `only`).
/// Reading and parsing the manifest cache files is most of `list`'s work,
/// so it is spread over the cores; the order stays the pools' order.
pub fn installed_images(cx: &Context, only: Option<&PoolName>) -> Result<Vec<ImageInfo>> {
    let scans = cx.scan_pools(only)?;
    let wanted: Vec<(&PoolImages, ImageUuid)> =
        scans.iter().flat_map(|scan| scan.images.keys().map(move |uuid| (scan, *uuid))).collect();
    let read = |part: &[(&PoolImages, ImageUuid)]| -> Vec<ImageInfo> {
        part.iter().map(|(scan, uuid)| scan.info(&cx.state, cx.driver, *uuid)).collect()
    };
    let threads = crate::codec::workers::count().min(wanted.len() / IMAGES_PER_THREAD).max(1);
    let chunk = wanted.len().div_ceil(threads).max(1);
    let mut parts = wanted.chunks(chunk);
    let first = parts.next().unwrap_or_default();
    std::thread::scope(|scope| {
        let others: Vec<_> = parts.map(|part| scope.spawn(move || read(part))).collect();
        let mut infos = read(first);
        for other in others {
            infos.extend(other.join().map_err(|_| Error::internal("a thread reading the manifest cache panicked"))?);
        }
        Ok(infos)
    })
}

/// The pool that holds `uuid`: `-P` when given, else the first imported
/// pool that has it (the default pool first).
fn find(cx: &Context, pool: Option<&PoolName>, uuid: ImageUuid) -> Result<PoolImages> {
    let default = PoolName::default();
    let mut scans = cx.scan_pools(pool)?;
    scans.sort_by_key(|scan| scan.pool != default);
    scans
        .into_iter()
        .find(|scan| scan.images.contains_key(&uuid))
        .ok_or_else(|| Error::ImageNotInstalled { uuid: uuid.to_string(), pool: pool.unwrap_or(&default).to_string() })
}

/// `get [-r]`: `{manifest, zpool, source?, driver}`, with `children` for -r.
pub fn get(cx: &Context, pool: Option<&PoolName>, uuid: ImageUuid, children: bool) -> Result<Value> {
    let scan = find(cx, pool, uuid)?;
    let info = scan.info(&cx.state, cx.driver, uuid);
    let mut value = json!({"manifest": info.manifest, "zpool": info.zpool});
    if let Some(source) = &info.source {
        value["source"] = json!(source);
    }
    value["driver"] = json!(info.driver);
    if children {
        let (snapshots, clones) = scan.children(uuid);
        value["children"] = json!({"snapshots": snapshots, "clones": clones});
    }
    Ok(value)
}

/// `ancestry`: the image, its origin, the origin's origin... down to the
/// base, all installed on one pool; any missing link is ImageNotInstalled.
pub fn ancestry(cx: &Context, pool: Option<&PoolName>, uuid: ImageUuid) -> Result<Vec<ImageInfo>> {
    let scan = find(cx, pool, uuid)?;
    let mut chain: Vec<ImageInfo> = Vec::new();
    let mut next = Some(uuid);
    while let Some(current) = next {
        if chain.iter().any(|i| i.uuid == current) {
            return Err(Error::internal(format!("image {current} is its own ancestor: the manifest cache is corrupt")));
        }
        if !scan.images.contains_key(&current) {
            return Err(Error::ImageNotInstalled { uuid: current.to_string(), pool: scan.pool.to_string() });
        }
        let info = scan.info(&cx.state, cx.driver, current);
        next = info.parsed.origin()?;
        chain.push(info);
    }
    Ok(chain)
}
