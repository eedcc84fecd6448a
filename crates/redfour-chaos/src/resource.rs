//! The resource the workers protect with the lock: a TCP server, never faulted, that accepts a
//! fenced write only when its index is at least the highest it has accepted, and keeps an
//! unfenced counter beside it (read at enter, written at exit) to show the damage that
//! overlapping holders do where nothing is fenced.
//!
//! Protocol, one request line and one answer line:
//!
//! - `W <index> <writer>` → `OK` or `STALE <highest>` (logged by the resource, in its order);
//! - `R` → the unfenced counter;
//! - `S <value>` → `OK`, sets the unfenced counter.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

use crate::events::{Log, What};

#[derive(Default)]
struct State {
    highest: i64,
    /// Fenced writes accepted.
    accepted: usize,
    unfenced: i64,
    /// How many `S` requests came: each is one increment (read + 1) by one holder.
    unfenced_writes: i64,
}

/// A running resource server (threads that live as long as the process).
pub struct Resource {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl Resource {
    /// Listens on a free port of 127.0.0.1 and logs its decisions to `log`.
    pub fn start(log: Log) -> io::Result<Resource> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State::default()));
        let log = Arc::new(log);
        let shared = state.clone();
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = shared.clone();
                let log = log.clone();
                thread::spawn(move || {
                    // A worker that dies just ends its connection.
                    let _ = serve(stream, &state, &log);
                });
            }
        });
        Ok(Resource { addr, state })
    }

    /// Where workers connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The unfenced counter now.
    pub fn unfenced(&self) -> i64 {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .unfenced
    }

    /// The highest index the resource has accepted a write with (0 before the first).
    pub fn highest(&self) -> i64 {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).highest
    }

    /// How many fenced writes were accepted so far.
    pub fn accepted(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .accepted
    }

    /// Increments of the unfenced counter that were lost: the writes it received (each one
    /// holder's read + 1) minus its value. Zero when no two holders overlapped.
    pub fn lost_updates(&self) -> i64 {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.unfenced_writes - s.unfenced
    }
}

fn serve(stream: TcpStream, state: &Mutex<State>, log: &Log) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut out = stream.try_clone()?;
    for line in BufReader::new(stream).lines() {
        let line = line?;
        let words: Vec<&str> = line.split(' ').collect();
        let answer = match words[..] {
            ["W", index, writer] => match index.parse::<i64>() {
                Ok(index) => {
                    let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
                    // Decided and logged under the lock, so the log is in decision order.
                    if index >= s.highest {
                        s.highest = index;
                        s.accepted += 1;
                        log.record(What::ResourceAccepted {
                            writer: writer.to_owned(),
                            index,
                        })?;
                        "OK".to_owned()
                    } else {
                        log.record(What::ResourceRejected {
                            writer: writer.to_owned(),
                            index,
                            highest: s.highest,
                        })?;
                        format!("STALE {}", s.highest)
                    }
                }
                Err(_) => "ERR bad index".to_owned(),
            },
            ["R"] => state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .unfenced
                .to_string(),
            ["S", value] => match value.parse::<i64>() {
                Ok(v) => {
                    let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
                    s.unfenced = v;
                    s.unfenced_writes += 1;
                    "OK".to_owned()
                }
                Err(_) => "ERR bad value".to_owned(),
            },
            _ => "ERR unknown request".to_owned(),
        };
        out.write_all(answer.as_bytes())?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// A worker's connection to the resource.
pub struct ResourceClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl ResourceClient {
    /// Connects to the resource at `addr`.
    pub fn connect(addr: &str) -> io::Result<ResourceClient> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        Ok(ResourceClient {
            writer: stream.try_clone()?,
            reader: BufReader::new(stream),
        })
    }

    fn ask(&mut self, request: &str) -> io::Result<String> {
        self.writer.write_all(request.as_bytes())?;
        self.writer.write_all(b"\n")?;
        let mut answer = String::new();
        if self.reader.read_line(&mut answer)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the resource closed the connection",
            ));
        }
        Ok(answer.trim_end().to_owned())
    }

    /// A fenced write with `index`; true when accepted.
    pub fn write(&mut self, index: i64, writer: &str) -> io::Result<bool> {
        let answer = self.ask(&format!("W {index} {writer}"))?;
        match answer.as_str() {
            "OK" => Ok(true),
            a if a.starts_with("STALE ") => Ok(false),
            a => Err(io::Error::other(format!("resource answered `{a}`"))),
        }
    }

    /// Reads the unfenced counter.
    pub fn read_unfenced(&mut self) -> io::Result<i64> {
        let answer = self.ask("R")?;
        answer
            .parse()
            .map_err(|_| io::Error::other(format!("resource answered `{answer}`")))
    }

    /// Sets the unfenced counter.
    pub fn set_unfenced(&mut self, value: i64) -> io::Result<()> {
        match self.ask(&format!("S {value}"))?.as_str() {
            "OK" => Ok(()),
            a => Err(io::Error::other(format!("resource answered `{a}`"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fences_and_counts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = Log::open(&dir.path().join("resource.log"), "resource").expect("log");
        let resource = Resource::start(log).expect("start");
        let mut c = ResourceClient::connect(&resource.addr().to_string()).expect("connect");
        assert!(c.write(5, "w1").expect("write"));
        assert!(
            c.write(5, "w1").expect("write"),
            "the same index again is fine"
        );
        assert!(c.write(9, "w2").expect("write"));
        assert!(
            !c.write(6, "w1").expect("write"),
            "a stale writer is rejected"
        );
        let read = c.read_unfenced().expect("read");
        c.set_unfenced(read + 1).expect("set");
        assert_eq!(resource.unfenced(), 1);
        // A second holder that read the same 0 writes 1 again: one update lost.
        c.set_unfenced(read + 1).expect("set");
        assert_eq!(resource.lost_updates(), 1);
        let events = crate::events::read_dir(dir.path()).expect("events");
        assert_eq!(events.len(), 4);
        assert!(matches!(
            events[3].what,
            What::ResourceRejected {
                index: 6,
                highest: 9,
                ..
            }
        ));
    }
}
