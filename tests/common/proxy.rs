//! A TCP proxy standing in for a DNS name that moves (ElastiCache's primary endpoint at a failover): it forwards
//! every connection to the current target, and [`Proxy::switch`] points it elsewhere and cuts every open connection.
//! In front of MySQL it can also play a server slow to find a binlog start ([`Proxy::stalling_binlog_starts`]).
//! Plain threads, so it forwards whatever the test's runtime is doing.

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct Proxy {
    pub port: u16,
    target: Arc<AtomicU16>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    stopped: Arc<AtomicBool>,
    stalls: Arc<AtomicUsize>,
}

impl Proxy {
    /// Listens on a free loopback port, forwarding to `127.0.0.1:target`.
    pub fn start(target: u16) -> Self {
        Self::started(target, None)
    }

    /// [`Proxy::start`] in front of MySQL, holding every binlog stream `delay` after its format description event, as
    /// a server reading a large binlog up to a GTID position does (no heartbeat meanwhile). The MySQL protocol must
    /// be plain (no TLS) for the proxy to see the events; [`Proxy::stalls`] counts the holds.
    pub fn stalling_binlog_starts(target: u16, delay: Duration) -> Self {
        Self::started(target, Some(delay))
    }

    /// How many binlog streams were held.
    pub fn stalls(&self) -> usize {
        self.stalls.load(Ordering::SeqCst)
    }

    fn started(target: u16, stall: Option<Duration>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().expect("local addr").port();
        let proxy = Self {
            port,
            target: Arc::new(AtomicU16::new(target)),
            open: Arc::new(Mutex::new(Vec::new())),
            stopped: Arc::new(AtomicBool::new(false)),
            stalls: Arc::new(AtomicUsize::new(0)),
        };
        let (target, open, stopped) = (proxy.target.clone(), proxy.open.clone(), proxy.stopped.clone());
        let stalls = proxy.stalls.clone();
        std::thread::spawn(move || {
            for inbound in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(inbound) = inbound else { continue };
                let Ok(outbound) = TcpStream::connect(("127.0.0.1", target.load(Ordering::SeqCst))) else {
                    let _ = inbound.shutdown(Shutdown::Both);
                    continue;
                };
                let mut open = open.lock().unwrap();
                for stream in [&inbound, &outbound] {
                    open.push(stream.try_clone().expect("clone a socket"));
                }
                pipe(inbound.try_clone().unwrap(), outbound.try_clone().unwrap());
                match stall {
                    Some(delay) => mysql_pipe(outbound, inbound, delay, stalls.clone()),
                    None => pipe(outbound, inbound),
                }
            }
        });
        proxy
    }

    /// `redis://127.0.0.1:PORT/0` through the proxy.
    pub fn redis_url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Points new connections at `target` and cuts every open one (their clients reconnect, to `target`).
    pub fn switch(&self, target: u16) {
        self.target.store(target, Ordering::SeqCst);
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
        // Wakes the accept loop so that it sees `stopped`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Copies `from` to `to` until either side closes.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buffer = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buffer[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}

/// Copies MySQL packets from the server `from` to the client `to`, holding `delay` after each binlog format
/// description event (a packet `0x00` + event header of type 15 whose size is the rest of the packet).
fn mysql_pipe(mut from: TcpStream, mut to: TcpStream, delay: Duration, stalls: Arc<AtomicUsize>) {
    std::thread::spawn(move || {
        let mut header = [0u8; 4];
        loop {
            if from.read_exact(&mut header).is_err() {
                break;
            }
            let length = usize::from(header[0]) | usize::from(header[1]) << 8 | usize::from(header[2]) << 16;
            let mut payload = vec![0u8; length];
            if from.read_exact(&mut payload).is_err()
                || to.write_all(&header).is_err()
                || to.write_all(&payload).is_err()
            {
                break;
            }
            let event_size = payload
                .get(10..14)
                .map(|size| u32::from_le_bytes(size.try_into().unwrap()) as usize);
            if payload.first() == Some(&0) && payload.get(5) == Some(&15) && event_size == Some(length - 1) {
                stalls.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(delay);
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}
