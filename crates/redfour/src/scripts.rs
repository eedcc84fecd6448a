//! The server-side scripts, sent with `EVALSHA` (and reloaded on `NOSCRIPT` by
//! [`redis::Script`]). Keys and names travel as KEYS/ARGV, never spliced into the source.

use std::sync::LazyLock;

use redis::aio::ConnectionLike;
use redis::{Cmd, FromRedisValue, RedisResult, Script, ToRedisArgs};

/// One `EVALSHA` of a script (every script call of the crate goes through it), built straight
/// into a command (one buffer for all arguments;
/// `redis::ScriptInvocation` allocates each argument on its own and copies them again, which
/// costs more than the rest of an acquire on the client), and reloaded on `NOSCRIPT`.
pub(crate) struct Eval {
    script: &'static Script,
    cmd: Cmd,
}

impl Eval {
    /// An invocation of `script` with these KEYS; ARGV follows with [`arg`](Eval::arg).
    pub(crate) fn new(script: &'static Script, keys: &[&str]) -> Eval {
        let mut cmd = Cmd::with_capacity(16, 256);
        cmd.arg("EVALSHA")
            .arg(script.get_hash())
            .arg(keys.len())
            .arg(keys);
        Eval { script, cmd }
    }

    /// Appends one ARGV value.
    pub(crate) fn arg<T: ToRedisArgs>(&mut self, arg: T) -> &mut Eval {
        self.cmd.arg(arg);
        self
    }

    /// Runs the script; when the server has lost it (`SCRIPT FLUSH`, a restart), loads it and
    /// runs it once more.
    pub(crate) async fn invoke<T: FromRedisValue>(
        &self,
        conn: &mut impl ConnectionLike,
    ) -> RedisResult<T> {
        match self.cmd.query_async(conn).await {
            Err(err)
                if err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
            {
                self.script.load_async(conn).await?;
                self.cmd.query_async(conn).await
            }
            other => other,
        }
    }
}

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
