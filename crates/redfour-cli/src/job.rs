//! The command `run` starts, kept from outliving the lock.
//!
//! - **Its own process group.** The command is the leader of a new process group, and every
//!   signal redfour sends it (forwarded, SIGTERM after a lost lease, SIGKILL after `--grace`)
//!   goes to the whole group: `sh -c 'a | b'`, `make` and the children of any script stop
//!   with it. Processes that leave the group (`setsid`, a shell's job control) are out of
//!   reach, as with `timeout(1)`.
//! - **Nothing left behind.** When the command exits, what it left running in its group is
//!   stopped (SIGTERM, SIGKILL after `--grace`) before the lock is released.
//! - **A watcher.** A second, small process (this binary, started with [`WATCH_ARG`]) holds
//!   the read end of a pipe from redfour. If redfour ends without saying it is done (SIGKILL,
//!   a crash, the OOM killer), the pipe closes and the watcher stops the group: SIGTERM, then
//!   SIGKILL after `kill_after`, which `run` keeps under a third of the ttl so the command is
//!   gone before the last renewed lease can run out. The watcher blocks the signals a
//!   terminal or a `kill` sends, and lives in a process group of its own; killing redfour and
//!   the watcher together with SIGKILL (`pkill -KILL redfour`) leaves the command running.
//! - **The terminal.** When redfour runs in the foreground of a terminal, the command's group
//!   is made the foreground group, as a shell does for a job, so that it can read the
//!   terminal and gets Ctrl-C / Ctrl-\ directly; redfour takes the terminal back after.

use std::ffi::OsString;
use std::io::{BufRead, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{ExitCode, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{killpg, pthread_sigmask, SigSet, SigmaskHow, Signal};
use nix::unistd::{getpgrp, tcgetpgrp, tcsetpgrp, Pid};
use tokio::process::{Child, Command};

/// The first argument that makes this binary a watcher: `redfour WATCH_ARG <kill_after_ms>`.
pub const WATCH_ARG: &str = "--internal-watch-job";

/// How often the group is checked for members while it is given time to exit.
const POLL: Duration = Duration::from_millis(10);

/// A running command and its process group.
pub struct Job {
    child: Child,
    group: Pid,
    watcher: Watcher,
    terminal: Option<Terminal>,
}

impl Job {
    /// Starts the watcher, then `command` in a new process group with `REDFOUR_ID` and
    /// `REDFOUR_INDEX` in its environment. `kill_after`: the watcher's SIGTERM-to-SIGKILL delay.
    pub fn start(
        command: &[OsString],
        id: &str,
        index: i64,
        kill_after: Duration,
    ) -> Result<Job, StartError> {
        let (program, args) = command.split_first().ok_or_else(|| {
            StartError::Command(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "empty command",
            ))
        })?;
        let watcher = Watcher::start(kill_after).map_err(StartError::Watcher)?;
        let child = Command::new(program)
            .args(args)
            .env("REDFOUR_ID", id)
            .env("REDFOUR_INDEX", index.to_string())
            .process_group(0)
            .spawn()
            .map_err(StartError::Command)?;
        // A process group's id is its leader's pid.
        let group = child
            .id()
            .and_then(|pid| i32::try_from(pid).ok())
            .map(Pid::from_raw)
            .ok_or_else(|| {
                StartError::Command(std::io::Error::other("the command has no process id"))
            })?;
        let mut job = Job {
            child,
            group,
            watcher,
            terminal: None,
        };
        job.watcher.watch(group);
        job.terminal = Terminal::hand_to(group);
        Ok(job)
    }

    /// Sends `sig` to every process of the command's group.
    pub fn signal(&self, sig: Signal) {
        // ESRCH: the group is empty; the leader's exit is reported by `wait`.
        let _ = killpg(self.group, sig);
    }

    /// Waits for the command (the group's leader) to exit. Cancel safe.
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait().await
    }

    /// After the leader exited: takes the terminal back and stops what the command left
    /// running in its group (SIGTERM, then SIGKILL at `kill_at`), so that nothing of it runs
    /// once the lock is released. Returns how the rest was stopped, if anything was left.
    pub async fn end(mut self, kill_at: Instant) -> Option<Stopped> {
        if let Some(terminal) = self.terminal.take() {
            terminal.take_back();
        }
        let stopped = stop_group(self.group, kill_at).await;
        self.watcher.done();
        stopped
    }
}

/// Why a job could not start.
pub enum StartError {
    /// The watcher process could not be started; the command was not started.
    Watcher(std::io::Error),
    /// The command itself could not be started.
    Command(std::io::Error),
}

/// How the processes left in a group were stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum Stopped {
    /// They exited after SIGTERM.
    Terminated,
    /// They were still there at the deadline and got SIGKILL.
    Killed,
}

/// Whether no live process is left in `group`.
fn group_is_empty(group: Pid) -> bool {
    // Signal 0 checks that the group has a member. EPERM: it has one we may not signal.
    if matches!(killpg(group, None), Err(Errno::ESRCH)) {
        return true;
    }
    // A member that died stays a zombie until its parent reaps it; an orphan's new parent
    // (PID 1 of a container, say) may never do so. Zombies run nothing: they don't count.
    live_members(group).is_some_and(|n| n == 0)
}

/// How many processes of `group` are not zombies; `None` where `/proc` cannot tell.
fn live_members(group: Pid) -> Option<usize> {
    let mut live = 0;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        if !name
            .to_str()
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        {
            continue;
        }
        // Gone meanwhile: not a member any more.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some((state, pgrp)) = parse_stat(&stat) {
            if pgrp == group.as_raw() && state != 'Z' && state != 'X' {
                live += 1;
            }
        }
    }
    Some(live)
}

/// The state and process group of a `/proc/PID/stat` line: `pid (comm) state ppid pgrp ...`,
/// where `comm` may hold spaces and parentheses, so the fields are counted after the last `)`.
fn parse_stat(stat: &str) -> Option<(char, i32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

/// Stops every process of `group`: SIGTERM, then SIGKILL at `kill_at` if any is left.
/// `None` when the group was empty to begin with.
async fn stop_group(group: Pid, kill_at: Instant) -> Option<Stopped> {
    if group_is_empty(group) {
        return None;
    }
    let _ = killpg(group, Signal::SIGTERM);
    while Instant::now() < kill_at {
        if group_is_empty(group) {
            return Some(Stopped::Terminated);
        }
        tokio::time::sleep(POLL.min(kill_at.saturating_duration_since(Instant::now()))).await;
    }
    if group_is_empty(group) {
        return Some(Stopped::Terminated);
    }
    let _ = killpg(group, Signal::SIGKILL);
    Some(Stopped::Killed)
}

/// redfour's end of the pipe to its watcher.
struct Watcher {
    /// Closed without `done` when redfour ends: the watcher then stops the group.
    pipe: Option<std::process::ChildStdin>,
    process: std::process::Child,
}

impl Watcher {
    fn start(kill_after: Duration) -> std::io::Result<Watcher> {
        let exe = std::env::current_exe()?;
        let mut process = std::process::Command::new(exe)
            .arg(WATCH_ARG)
            .arg(kill_after.as_millis().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            // Its own group: a Ctrl-C or a `kill` of redfour's group does not reach it.
            .process_group(0)
            .spawn()?;
        let pipe = process.stdin.take();
        Ok(Watcher { pipe, process })
    }

    fn watch(&mut self, group: Pid) {
        self.say(&format!("job {group}\n"));
    }

    /// The group is empty: the watcher may exit without touching it.
    fn done(&mut self) {
        self.say("done\n");
        self.pipe = None;
        // It exits at once; reap it if it already has (never block for it).
        let _ = self.process.try_wait();
    }

    fn say(&mut self, line: &str) {
        // A few bytes into an empty pipe complete at once. If the watcher is gone (EPIPE),
        // there is nobody left to tell.
        if let Some(pipe) = &mut self.pipe {
            let _ = pipe.write_all(line.as_bytes());
        }
    }
}

/// The watcher's whole life: `redfour --internal-watch-job <kill_after_ms>`, reading
/// `job <pgid>` and `done` lines on stdin until it closes.
pub fn watch_main(args: &[OsString]) -> ExitCode {
    let mut blocked = SigSet::empty();
    for sig in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGALRM,
        Signal::SIGPIPE,
        Signal::SIGTSTP,
        Signal::SIGTTIN,
        Signal::SIGTTOU,
    ] {
        blocked.add(sig);
    }
    // Blocked signals stay pending and never run their default action.
    let _ = blocked.thread_block();
    let kill_after = args
        .first()
        .and_then(|a| a.to_str())
        .and_then(|a| a.parse::<u64>().ok())
        .map_or(Duration::from_secs(1), Duration::from_millis);
    let mut group = None;
    let mut done = false;
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if let Some(pgid) = line.strip_prefix("job ") {
            group = pgid
                .parse::<i32>()
                .ok()
                .filter(|p| *p > 1)
                .map(Pid::from_raw);
        } else if line == "done" {
            done = true;
        }
    }
    let Some(group) = group.filter(|_| !done) else {
        return ExitCode::SUCCESS;
    };
    if group_is_empty(group) {
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "redfour: the redfour process running the command (process group {group}) ended while it ran; stopping the command: SIGTERM, then SIGKILL after {} ms",
        kill_after.as_millis()
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build();
    let stopped = match runtime {
        Ok(rt) => rt.block_on(stop_group(group, Instant::now() + kill_after)),
        Err(_) => {
            let _ = killpg(group, Signal::SIGKILL);
            Some(Stopped::Killed)
        }
    };
    if stopped == Some(Stopped::Killed) {
        eprintln!("redfour: process group {group} got SIGKILL");
    }
    ExitCode::SUCCESS
}

/// The terminal, handed to the command's group while it runs.
struct Terminal {
    tty: std::fs::File,
    ours: Pid,
}

impl Terminal {
    /// Makes `group` the terminal's foreground group if redfour is in the foreground now.
    fn hand_to(group: Pid) -> Option<Terminal> {
        // No controlling terminal (cron, a service, a pipeline under `setsid`): nothing to do.
        let tty = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/tty")
            .ok()?;
        let ours = getpgrp();
        if tcgetpgrp(&tty).ok()? != ours {
            // In the background: the command stays there too.
            return None;
        }
        tcsetpgrp(&tty, group).ok()?;
        // It may have tried to read the terminal before it was its own, and been stopped.
        let _ = killpg(group, Signal::SIGCONT);
        Some(Terminal { tty, ours })
    }

    fn take_back(self) {
        // redfour is now in a background group: without SIGTTOU blocked, `tcsetpgrp` would
        // stop it.
        let mut ttou = SigSet::empty();
        ttou.add(Signal::SIGTTOU);
        let mut before = SigSet::empty();
        if pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&ttou), Some(&mut before)).is_ok() {
            let _ = tcsetpgrp(&self.tty, self.ours);
            let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&before), None);
        }
    }
}

/// The child's status as an exit status: its code, or 128 + the signal that killed it.
pub fn exit_status(status: ExitStatus) -> u8 {
    if let Some(code) = status.code() {
        // Unix exit codes are 0..=255 already.
        return u8::try_from(code & 0xff).unwrap_or(u8::MAX);
    }
    match status.signal() {
        Some(sig) => u8::try_from(i32::from(crate::exit::SIGNAL_BASE) + sig).unwrap_or(u8::MAX),
        None => u8::MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_of_a_signal_is_128_plus() {
        assert_eq!(exit_status(ExitStatus::from_raw(7 << 8)), 7);
        assert_eq!(exit_status(ExitStatus::from_raw(0)), 0);
        assert_eq!(exit_status(ExitStatus::from_raw(15)), 143);
        assert_eq!(exit_status(ExitStatus::from_raw(9)), 137);
    }

    #[test]
    fn reads_state_and_group_from_proc_stat() {
        assert_eq!(
            parse_stat("2145 (sleep) Z 1 2048 2041 0 -1 4194316"),
            Some(('Z', 2048))
        );
        assert_eq!(
            parse_stat("77 (a (b) c) S 5 77 77 0"),
            Some(('S', 77)),
            "a command name with spaces and parentheses"
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 0 notanumber"), None);
    }

    #[tokio::test]
    async fn a_zombie_does_not_keep_a_group_alive() {
        // The child exits but is not reaped yet: a zombie, still in its group.
        let mut child = std::process::Command::new("true")
            .process_group(0)
            .spawn()
            .unwrap();
        let group = Pid::from_raw(child.id() as i32);
        let started = Instant::now();
        while !group_is_empty(group) {
            assert!(started.elapsed() < Duration::from_secs(5), "still live");
            tokio::time::sleep(POLL).await;
        }
        assert!(killpg(group, None).is_ok(), "the zombie is still a member");
        child.wait().unwrap();
    }

    #[tokio::test]
    async fn stopping_an_empty_group_does_nothing() {
        // A fresh group whose only member is reaped at once.
        let mut child = Command::new("true").process_group(0).spawn().unwrap();
        let group = Pid::from_raw(child.id().unwrap() as i32);
        child.wait().await.unwrap();
        assert!(group_is_empty(group));
        assert_eq!(stop_group(group, Instant::now()).await, None);
    }

    #[tokio::test]
    async fn a_member_that_ignores_sigterm_gets_sigkill_at_the_deadline() {
        let mut child = Command::new("sh")
            .args(["-c", "trap '' TERM; while true; do sleep 0.05; done"])
            .process_group(0)
            .spawn()
            .unwrap();
        let group = Pid::from_raw(child.id().unwrap() as i32);
        let started = Instant::now();
        // Give the shell time to install its trap: poll its signal mask.
        let pid = child.id().unwrap();
        let trapped = || {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("SigIgn:"))
                        .map(|h| u64::from_str_radix(h.trim(), 16).unwrap_or(0))
                })
                .is_some_and(|mask| mask & (1 << (15 - 1)) != 0)
        };
        while !trapped() {
            assert!(started.elapsed() < Duration::from_secs(5), "no trap");
            tokio::time::sleep(POLL).await;
        }
        let stopped = stop_group(group, Instant::now() + Duration::from_millis(200)).await;
        assert_eq!(stopped, Some(Stopped::Killed));
        let status = child.wait().await.unwrap();
        assert_eq!(status.signal(), Some(9));
    }
}
