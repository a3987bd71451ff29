//! `imgadm show UUID`: the manifest from the first source (in order) that
//! has it, active or not.

use crate::context::Context;
use crate::error::{Error, Result};
use crate::ids::ImageUuid;
use crate::manifest::Manifest;
use crate::source;

pub fn show(cx: &Context, uuid: ImageUuid) -> Result<Manifest> {
    let specs = source::effective(&cx.config, &[], None)?;
    let clients = source::imgapi_clients(&cx.config, &specs)?;
    match source::find_image(&clients, uuid, false)? {
        Some((_, manifest)) => Ok(manifest),
        None => Err(Error::ImageNotFound(uuid.to_string())),
    }
}
