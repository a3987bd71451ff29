//! `imgadm avail [FILTER...] [-j] [-H] [-o FIELD,...] [-s FIELD,...]` (alias `available`)

use imgadm_engine::context::Context;
use imgadm_engine::verbs::avail;
use imgadm_engine::Result;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// `-j` prints `[{manifest, source}]`.
    #[command(flatten)]
    listing: super::list::ListingArgs,
}

/// The images of the sources that answered are printed even when another
/// source failed; the command then fails naming it.
pub fn run(cx: Context, args: Args) -> Result<()> {
    let available = avail::avail(&cx)?;
    args.listing.print(available.rows)?;
    match available.failure {
        Some(error) => Err(error),
        None => Ok(()),
    }
}
