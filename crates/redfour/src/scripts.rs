//! The server-side scripts, sent with `EVALSHA` (and reloaded on `NOSCRIPT` by
//! [`redis::Script`]). Keys and names travel as KEYS/ARGV, never spliced into the source.

use std::sync::LazyLock;

/// A script made of shared Lua functions followed by its own body.
macro_rules! script {
    ($($part:literal),+) => {
        LazyLock::new(|| redis::Script::new(concat!($(include_str!($part)),+)))
    };
}

pub(crate) static ACQUIRE: LazyLock<redis::Script> =
    script!("scripts/common.lua", "scripts/acquire.lua");
pub(crate) static RELEASE: LazyLock<redis::Script> =
    script!("scripts/common.lua", "scripts/release.lua");
pub(crate) static RENEW: LazyLock<redis::Script> =
    script!("scripts/common.lua", "scripts/renew.lua");
pub(crate) static STATUS: LazyLock<redis::Script> = script!("scripts/status.lua");
pub(crate) static FAIR_ACQUIRE: LazyLock<redis::Script> = script!(
    "scripts/common.lua",
    "scripts/fair_common.lua",
    "scripts/fair_acquire.lua"
);
pub(crate) static FAIR_RELEASE: LazyLock<redis::Script> = script!(
    "scripts/common.lua",
    "scripts/fair_common.lua",
    "scripts/fair_release.lua"
);
pub(crate) static FAIR_LEAVE: LazyLock<redis::Script> = script!("scripts/fair_leave.lua");

#[cfg(test)]
mod tests {
    #[test]
    fn scripts_do_not_splice_names() {
        for src in [
            include_str!("scripts/common.lua"),
            include_str!("scripts/acquire.lua"),
            include_str!("scripts/release.lua"),
            include_str!("scripts/renew.lua"),
            include_str!("scripts/status.lua"),
            include_str!("scripts/fair_common.lua"),
            include_str!("scripts/fair_acquire.lua"),
            include_str!("scripts/fair_release.lua"),
            include_str!("scripts/fair_leave.lua"),
        ] {
            assert!(!src.contains("${"), "a script must not be a template");
            assert!(!src.contains("'lock"), "a script must not name a namespace");
        }
    }
}
