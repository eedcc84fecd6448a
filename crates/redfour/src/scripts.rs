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

impl Eval {
    /// The command as built, and the script it runs (for a caller that sends it in a pipeline
    /// of its own and reloads the script on `NOSCRIPT`).
    pub(crate) fn parts(&self) -> (&Cmd, &'static Script) {
        (&self.cmd, self.script)
    }
}

/// A script made of shared Lua functions followed by its own body (a script carries only the
/// functions it calls: the server defines each again on every call).
macro_rules! script {
    ($($part:literal),+) => {
        LazyLock::new(|| redis::Script::new(concat!($(include_str!($part)),+)))
    };
}

/// The scripts of one layout: they differ in how notices go out (`PUBLISH`, or `SPUBLISH`
/// on a cluster).
pub(crate) struct ScriptSet {
    pub(crate) acquire: LazyLock<Script>,
    pub(crate) release: LazyLock<Script>,
    pub(crate) renew: LazyLock<Script>,
    pub(crate) status: LazyLock<Script>,
    pub(crate) fair_acquire: LazyLock<Script>,
    pub(crate) fair_release: LazyLock<Script>,
    pub(crate) fair_leave: LazyLock<Script>,
}

/// The scripts of one layout, `$publish` naming the prelude that defines `redfour_publish`.
macro_rules! script_set {
    ($publish:literal) => {
        ScriptSet {
            acquire: script!(
                "scripts/lock.lua",
                "scripts/grant.lua",
                "scripts/acquire.lua"
            ),
            release: script!($publish, "scripts/lock.lua", "scripts/release.lua"),
            renew: script!("scripts/lock.lua", "scripts/renew.lua"),
            status: script!("scripts/status.lua"),
            // The fair scripts take their usual case first, written out, before the
            // shared functions are defined (see fair_acquire_free.lua).
            fair_acquire: script!(
                "scripts/fair_acquire_free.lua",
                $publish,
                "scripts/lock.lua",
                "scripts/grant.lua",
                "scripts/fair_common.lua",
                "scripts/fair_acquire.lua"
            ),
            fair_release: script!(
                $publish,
                "scripts/fair_release_alone.lua",
                "scripts/fair_release_handover.lua",
                "scripts/lock.lua",
                "scripts/grant.lua",
                "scripts/fair_common.lua",
                "scripts/fair_release.lua"
            ),
            fair_leave: script!("scripts/fair_leave.lua"),
        }
    };
}

/// Node redfour's layout: notices with `PUBLISH`.
pub(crate) static NODE: ScriptSet = script_set!("scripts/publish.lua");
/// The cluster layout: notices with `SPUBLISH`, in the lock's slot.
pub(crate) static CLUSTER: ScriptSet = script_set!("scripts/spublish.lua");

/// A bounded, read-only look at one key of the namespace, for listings (see `list.lua`); it
/// publishes nothing, so both layouts share it.
pub(crate) static LIST: LazyLock<Script> = script!("scripts/list.lua");

/// Redlock's second step on each granting master (see `redlock_adopt.lua`).
pub(crate) static REDLOCK_ADOPT: LazyLock<Script> =
    script!("scripts/lock.lua", "scripts/redlock_adopt.lua");

#[cfg(test)]
mod tests {
    /// The fair acquire's and the handover's usual cases write a per-lock counter's expiry
    /// themselves, ahead of grant.lua's constant: all must agree.
    #[test]
    fn the_counter_life_is_one_figure() {
        let grant = include_str!("scripts/grant.lua");
        let life = grant
            .lines()
            .find_map(|l| l.strip_prefix("local REDFOUR_COUNTER_LIFE_MS = "))
            .expect("grant.lua defines REDFOUR_COUNTER_LIFE_MS");
        for (name, script) in [
            (
                "fair_acquire_free.lua",
                include_str!("scripts/fair_acquire_free.lua"),
            ),
            (
                "fair_release_handover.lua",
                include_str!("scripts/fair_release_handover.lua"),
            ),
        ] {
            assert!(
                script.contains(&format!("redis.call('PEXPIRE', KEYS[2], {life})")),
                "{name} must expire a per-lock counter after {life} ms"
            );
        }
    }

    /// The fair release's usual handover checks a queue entry as `redfour_usable_entry`
    /// does, written out: both must refuse the same holder fields.
    #[test]
    fn the_reserved_fields_are_one_list() {
        fn reserved(script: &str, prefix: &str) -> String {
            script
                .lines()
                .find_map(|l| l.trim().strip_prefix(prefix))
                .unwrap_or_else(|| panic!("no line starting with {prefix:?}"))
                .to_owned()
        }
        assert_eq!(
            reserved(
                include_str!("scripts/fair_common.lua"),
                "local redfour_reserved = "
            ),
            reserved(
                include_str!("scripts/fair_release_handover.lua"),
                "local reserved = "
            ),
        );
    }

    #[test]
    fn scripts_do_not_splice_names() {
        for src in [
            include_str!("scripts/lock.lua"),
            include_str!("scripts/grant.lua"),
            include_str!("scripts/acquire.lua"),
            include_str!("scripts/release.lua"),
            include_str!("scripts/renew.lua"),
            include_str!("scripts/status.lua"),
            include_str!("scripts/fair_common.lua"),
            include_str!("scripts/fair_acquire_free.lua"),
            include_str!("scripts/fair_acquire.lua"),
            include_str!("scripts/fair_release_alone.lua"),
            include_str!("scripts/fair_release_handover.lua"),
            include_str!("scripts/fair_release.lua"),
            include_str!("scripts/fair_leave.lua"),
            include_str!("scripts/publish.lua"),
            include_str!("scripts/spublish.lua"),
            include_str!("scripts/redlock_adopt.lua"),
            include_str!("scripts/list.lua"),
        ] {
            assert!(!src.contains("${"), "a script must not be a template");
            assert!(!src.contains("'lock"), "a script must not name a namespace");
        }
    }
}
