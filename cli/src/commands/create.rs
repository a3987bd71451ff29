//! `imgadm create [-m FILE|-] [-o TEMPLATE] [-c COMPRESSION] [-i]
//! [--max-origin-depth N] [-s SCRIPT] [-p URL] [-q] VM-UUID [field=value ...]`

use std::io::Read;
use std::path::{Path, PathBuf};

use imgadm_engine::context::Context;
use imgadm_engine::ids::ImageUuid;
use imgadm_engine::verbs::create::{self, CreateArgs, ManifestInput};
use imgadm_engine::verbs::publish;
use imgadm_engine::{Error, Result};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Manifest fields of the new image, as a JSON object in a file ('-' for stdin).
    #[arg(short = 'm', value_name = "MANIFEST")]
    manifest: Option<PathBuf>,
    /// Where to write the image: a directory, or a path prefix for the
    /// .imgmanifest and .zfs files (default: NAME-VERSION in the current directory).
    #[arg(short = 'o', long = "output-template", value_name = "TEMPLATE")]
    output_template: Option<PathBuf>,
    /// Compression of the image file: none, gzip, bzip2 or xz.
    #[arg(short = 'c', long = "compression", value_name = "COMPRESSION", default_value = "none")]
    compression: String,
    /// Make an incremental image (a diff from the VM's origin image).
    #[arg(short = 'i', long = "incremental")]
    incremental: bool,
    /// Refuse an incremental image whose origin chain would be deeper than N.
    #[arg(long = "max-origin-depth", value_name = "N")]
    max_origin_depth: Option<u32>,
    /// A prepare-image script to run in the VM first (needs vmadm).
    #[arg(short = 's', value_name = "SCRIPT")]
    prepare_script: Option<PathBuf>,
    /// Publish the image to this Images API server instead of writing files.
    #[arg(short = 'p', long = "publish", value_name = "URL")]
    publish: Option<String>,
    /// Disable progress bars.
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,
    /// The VM to make the image from.
    vm: String,
    /// Manifest fields, FIELD=VALUE (VALUE is JSON if it parses as JSON).
    fields: Vec<String>,
}

pub fn run(cx: Context, args: Args) -> Result<()> {
    let compression = create::parse_compression(&args.compression)?;
    if args.output_template.is_some() && args.publish.is_some() {
        return Err(Error::Usage("cannot specify both -o,--output-template and -p,--publish".to_string()));
    }
    let max_origin_depth = args.max_origin_depth.map(create::check_max_origin_depth).transpose()?;
    let vm = ImageUuid::parse(&args.vm)?;
    let manifest_bytes = match &args.manifest {
        None => None,
        Some(path) if path == Path::new("-") => {
            let mut bytes = Vec::new();
            std::io::stdin().read_to_end(&mut bytes).map_err(|e| Error::io("cannot read the manifest on stdin", e))?;
            Some((ManifestInput::Stdin, bytes))
        }
        Some(path) => {
            let bytes = std::fs::read(path).map_err(|e| Error::io_path("cannot read manifest", path, e))?;
            Some((ManifestInput::File(path), bytes))
        }
    };
    let fields = create::user_fields(manifest_bytes.as_ref().map(|(input, bytes)| (*input, bytes.as_slice())), &args.fields)?;
    // With -p the image goes to a temp prefix, published, then removed.
    let output_template = match &args.publish {
        Some(_) => Some(publish::create_temp_prefix(&cx)?),
        None => args.output_template,
    };
    let create_args = CreateArgs {
        vm,
        fields,
        output_template,
        compression,
        incremental: args.incremental,
        max_origin_depth,
        prepare_script: args.prepare_script,
    };
    let created = create::create(&cx, &create_args)?;
    match &args.publish {
        Some(url) => publish::publish_created(&cx, &created, url),
        None => Ok(()),
    }
}
