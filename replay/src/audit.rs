//! Drift: what the journal says is installed against what the pools hold.

use std::collections::BTreeSet;

use imgadm_engine::context::Context;
use imgadm_engine::Result;
use serde::Serialize;

/// One disagreement between the journal's projection and a pool.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Drift {
    pub pool: String,
    pub image: String,
    /// `not-in-journal`: on the pool, never installed through imgadm-rs;
    /// `missing`: the journal installed it, the pool no longer has it.
    pub kind: String,
}

/// Compares the projection of installed images with every imported pool of
/// the command's driver.
pub fn drift(cx: &Context) -> Result<Vec<Drift>> {
    let driver = cx.driver.to_string();
    let recorded: BTreeSet<(String, String)> = cx
        .journal
        .installed()?
        .into_iter()
        .filter(|i| i.driver == driver)
        .map(|i| (i.pool, i.image))
        .collect();
    let mut present = BTreeSet::new();
    let mut pools = BTreeSet::new();
    for scan in cx.scan_pools(None)? {
        pools.insert(scan.pool.to_string());
        for uuid in scan.images.keys() {
            present.insert((scan.pool.to_string(), uuid.to_string()));
        }
    }
    let mut drift: Vec<Drift> = present
        .difference(&recorded)
        .map(|(pool, image)| Drift { pool: pool.clone(), image: image.clone(), kind: "not-in-journal".into() })
        .collect();
    drift.extend(
        recorded
            .difference(&present)
            .filter(|(pool, _)| pools.contains(pool))
            .map(|(pool, image)| Drift { pool: pool.clone(), image: image.clone(), kind: "missing".into() }),
    );
    drift.sort();
    Ok(drift)
}
