//! The Node side of a mixed fleet: where `node`, Node redfour 1.0.5 and the suite's Node worker
//! (`interop/chaos-worker.js`) are.
//!
//! The Node worker takes the Rust worker's command-line flags (those of a standalone Redis) and
//! writes the same events to its log, so that the [checker](crate::check) judges both sides
//! alike; see the comment at the top of `interop/chaos-worker.js` for how it counts its lease.
//! Node redfour is installed with `npm ci` in `interop/` (from its `package-lock.json`).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// What starts a Node worker.
#[derive(Debug, Clone)]
pub struct NodeSetup {
    /// The `node` executable.
    pub node: PathBuf,
    /// `interop/chaos-worker.js`.
    pub worker: PathBuf,
}

/// The environment variable that turns a missing Node setup from a skipped scenario into a
/// failure (CI sets it, as for the library's Node interop tests).
pub const REQUIRE_NODE: &str = "REDFOUR_REQUIRE_NODE";

/// Whether [`REQUIRE_NODE`] is set (to anything but the empty string).
pub fn required() -> bool {
    std::env::var_os(REQUIRE_NODE).is_some_and(|v| !v.is_empty())
}

/// The workspace's `interop/` directory, as this crate was built from it.
pub fn interop_dir() -> PathBuf {
    // crates/redfour-chaos -> the workspace root.
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    crate_dir
        .ancestors()
        .nth(2)
        .unwrap_or(crate_dir)
        .join("interop")
}

/// Finds `node` on `PATH`, Node redfour 1.0.5 in `interop/node_modules` and the Node worker;
/// the reason, ready to print, when one is missing.
pub fn find() -> Result<NodeSetup, String> {
    find_in(&interop_dir(), std::env::var_os("PATH").as_deref())
}

fn find_in(interop: &Path, path: Option<&OsStr>) -> Result<NodeSetup, String> {
    let node = path
        .and_then(|p| {
            std::env::split_paths(p)
                .map(|dir| dir.join("node"))
                .find(|candidate| candidate.is_file())
        })
        .ok_or("`node` is not on PATH")?;
    let package = interop.join("node_modules/redfour/package.json");
    let manifest = std::fs::read_to_string(&package).map_err(|e| {
        format!(
            "{} cannot be read ({e}): run `npm ci` in {}",
            package.display(),
            interop.display()
        )
    })?;
    let version = serde_json::from_str::<serde_json::Value>(&manifest)
        .ok()
        .and_then(|v| v.get("version")?.as_str().map(str::to_owned));
    if version.as_deref() != Some("1.0.5") {
        return Err(format!(
            "{} is not redfour 1.0.5 (version {version:?}): run `npm ci` in {}",
            package.display(),
            interop.display()
        ));
    }
    let worker = interop.join("chaos-worker.js");
    if !worker.is_file() {
        return Err(format!("the Node worker {} is missing", worker.display()));
    }
    Ok(NodeSetup { node, worker })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn says_what_is_missing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("bin");
        let interop = dir.path().join("interop");
        std::fs::create_dir_all(&bin).expect("mkdir");
        std::fs::create_dir_all(interop.join("node_modules/redfour")).expect("mkdir");
        let path = std::env::join_paths([&bin]).expect("path");

        let err = find_in(&interop, Some(&path)).expect_err("no node");
        assert!(err.contains("`node` is not on PATH"), "{err}");

        std::fs::write(bin.join("node"), "").expect("node");
        let err = find_in(&interop, Some(&path)).expect_err("no package");
        assert!(err.contains("npm ci"), "{err}");

        let package = interop.join("node_modules/redfour/package.json");
        std::fs::write(&package, r#"{"name": "redfour", "version": "2.0.0"}"#).expect("write");
        let err = find_in(&interop, Some(&path)).expect_err("wrong version");
        assert!(err.contains("not redfour 1.0.5"), "{err}");

        std::fs::write(&package, r#"{"name": "redfour", "version": "1.0.5"}"#).expect("write");
        let err = find_in(&interop, Some(&path)).expect_err("no worker");
        assert!(err.contains("chaos-worker.js"), "{err}");

        std::fs::write(interop.join("chaos-worker.js"), "").expect("write");
        let setup = find_in(&interop, Some(&path)).expect("found");
        assert_eq!(setup.node, bin.join("node"));
        assert_eq!(setup.worker, interop.join("chaos-worker.js"));
    }

    #[test]
    fn the_workspace_has_the_node_worker() {
        assert!(interop_dir().join("chaos-worker.js").is_file());
    }
}
