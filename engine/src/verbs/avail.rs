//! `imgadm avail`: the images every IMGAPI source offers, listed from all
//! sources in parallel and de-duplicated by uuid in source order (the first
//! configured source that has an image wins, whichever answered first). A
//! failing source does not hide the others' images: the rows come back with
//! the failure, and the CLI prints the rows, then the error.

use crate::context::Context;
use crate::error::{Error, Result};
use crate::listing::{Row, RowExtras};
use crate::source::{self, SourceType};

pub struct Available {
    pub rows: Vec<Row>,
    /// The sources that failed (one error, or a `MultiError`).
    pub failure: Option<Error>,
}

pub fn avail(cx: &Context) -> Result<Available> {
    let specs: Vec<_> =
        source::effective(&cx.config, &[], None)?.into_iter().filter(|s| s.kind != SourceType::Docker).collect();
    if specs.is_empty() {
        return Err(Error::NoSources);
    }
    let clients = source::imgapi_clients(&cx.config, &specs)?;
    let listed = std::thread::scope(|scope| {
        let handles: Vec<_> = clients.iter().map(|client| scope.spawn(move || client.list_images())).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(Error::internal("a listing thread panicked"))))
            .collect::<Vec<_>>()
    });
    let mut seen = std::collections::HashSet::new();
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    for (client, result) in clients.iter().zip(listed) {
        match result {
            Ok(manifests) => {
                for manifest in manifests {
                    let Ok(uuid) = manifest.uuid() else { continue };
                    if seen.insert(uuid) {
                        let extras = RowExtras { source: Some(client.url().to_string()), ..RowExtras::default() };
                        rows.push(Row::new(manifest, extras));
                    }
                }
            }
            Err(e) => errors.push(e),
        }
    }
    Ok(Available { rows, failure: Error::combine(errors) })
}
