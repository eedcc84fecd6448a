//! A fault-injecting TCP proxy between clients and a server: it passes bytes through, delays
//! the server's replies, holds all traffic (a black hole), or drops every connection.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

#[derive(Default)]
struct Faults {
    /// How long the server's bytes are held before they reach the client.
    reply_delay: Duration,
    /// Hold every byte, both ways, until the black hole is lifted.
    black_hole: bool,
    /// Every connection ever proxied (both sockets), for [`Proxy::drop_connections`].
    connections: Vec<(TcpStream, TcpStream)>,
}

/// A proxy on a free port of 127.0.0.1 in front of `target`. Faults apply to the bytes that
/// cross it from the moment they are set; a stopped proxy (dropped) closes its listener but
/// leaves connections to end on their own.
pub struct Proxy {
    addr: SocketAddr,
    faults: Arc<Mutex<Faults>>,
    closed: Arc<AtomicBool>,
}

impl Proxy {
    /// Starts a proxy in front of `target`.
    ///
    /// # Errors
    ///
    /// When no local port can be bound.
    pub fn start(target: SocketAddr) -> io::Result<Proxy> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let addr = listener.local_addr()?;
        let faults = Arc::new(Mutex::new(Faults::default()));
        let closed = Arc::new(AtomicBool::new(false));
        let (shared, stop) = (faults.clone(), closed.clone());
        thread::spawn(move || {
            for client in listener.incoming() {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(target) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                if let Err(err) = splice(client, server, &shared) {
                    eprintln!("redfour-test proxy: {err}");
                }
            }
        });
        Ok(Proxy {
            addr,
            faults,
            closed,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `redis://127.0.0.1:PORT/` of the proxy.
    pub fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    /// Holds the server's replies for `delay` before passing them on (zero: no delay).
    pub fn set_reply_delay(&self, delay: Duration) {
        self.faults().reply_delay = delay;
    }

    /// Holds every byte both ways while `on`; lifting it delivers what was held, in order.
    pub fn set_black_hole(&self, on: bool) {
        self.faults().black_hole = on;
    }

    /// Shuts down every connection the proxy carries, both sides: clients see them drop.
    pub fn drop_connections(&self) {
        for (a, b) in self.faults().connections.drain(..) {
            let _ = a.shutdown(Shutdown::Both);
            let _ = b.shutdown(Shutdown::Both);
        }
    }

    fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::Relaxed);
        // Let held bytes go, so that no writer thread keeps waiting on a fault.
        {
            let mut faults = self.faults();
            faults.black_hole = false;
            faults.reply_delay = Duration::ZERO;
        }
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
        self.drop_connections();
    }
}

/// Carries one connection: a reader and a writer thread per direction, the writer applying
/// the faults to each chunk when it is due.
fn splice(client: TcpStream, server: TcpStream, faults: &Arc<Mutex<Faults>>) -> io::Result<()> {
    faults
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .connections
        .push((client.try_clone()?, server.try_clone()?));
    pump(
        client.try_clone()?,
        server.try_clone()?,
        faults.clone(),
        false,
    );
    pump(server, client, faults.clone(), true);
    Ok(())
}

fn pump(mut from: TcpStream, mut to: TcpStream, faults: Arc<Mutex<Faults>>, replies: bool) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let reader_faults = faults.clone();
    thread::spawn(move || {
        let faults = reader_faults;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = tx.send((Instant::now(), Vec::new()));
                    return;
                }
                Ok(n) => {
                    let delay = if replies {
                        faults.lock().unwrap_or_else(|e| e.into_inner()).reply_delay
                    } else {
                        Duration::ZERO
                    };
                    if tx
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    });
    thread::spawn(move || {
        for (due, chunk) in rx {
            if chunk.is_empty() {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            // The fault's own timing: hold the bytes until they are due and the hole is lifted.
            loop {
                let now = Instant::now();
                let held = faults.lock().unwrap_or_else(|e| e.into_inner()).black_hole;
                if !held && now >= due {
                    break;
                }
                thread::sleep(if held {
                    Duration::from_millis(5)
                } else {
                    due - now
                });
            }
            if to.write_all(&chunk).is_err() {
                return;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};

    /// An echo server for the proxy to stand in front of.
    fn echo() -> SocketAddr {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let addr = listener.local_addr().expect("addr");
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                thread::spawn(move || {
                    let mut out = stream.try_clone().expect("clone");
                    for line in BufReader::new(stream).lines() {
                        let Ok(line) = line else { return };
                        if out.write_all(format!("{line}\n").as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    fn ask(conn: &mut BufReader<TcpStream>, line: &str) -> io::Result<String> {
        conn.get_mut().write_all(format!("{line}\n").as_bytes())?;
        let mut answer = String::new();
        conn.read_line(&mut answer)?;
        Ok(answer)
    }

    #[test]
    fn passes_delays_and_drops() {
        let proxy = Proxy::start(echo()).expect("proxy");
        let mut conn = BufReader::new(TcpStream::connect(proxy.addr()).expect("connect"));
        assert_eq!(ask(&mut conn, "a").expect("echo"), "a\n");

        proxy.set_reply_delay(Duration::from_millis(200));
        let start = Instant::now();
        assert_eq!(ask(&mut conn, "b").expect("echo"), "b\n");
        assert!(start.elapsed() >= Duration::from_millis(200));
        proxy.set_reply_delay(Duration::ZERO);

        proxy.drop_connections();
        let mut answer = String::new();
        let gone = ask(&mut conn, "c").map(|a| a.is_empty()).unwrap_or(true)
            || conn.read_line(&mut answer).map(|n| n == 0).unwrap_or(true);
        assert!(gone, "the connection survived drop_connections");
    }
}
