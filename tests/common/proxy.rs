//! A TCP proxy standing in for a DNS name that moves (ElastiCache's primary endpoint at a failover): it forwards
//! every connection to the current target, and [`Proxy::switch`] points it elsewhere and cuts every open connection.
//! Plain threads, so it forwards whatever the test's runtime is doing.

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

pub struct Proxy {
    pub port: u16,
    target: Arc<AtomicU16>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    stopped: Arc<AtomicBool>,
}

impl Proxy {
    /// Listens on a free loopback port, forwarding to `127.0.0.1:target`.
    pub fn start(target: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().expect("local addr").port();
        let proxy = Self {
            port,
            target: Arc::new(AtomicU16::new(target)),
            open: Arc::new(Mutex::new(Vec::new())),
            stopped: Arc::new(AtomicBool::new(false)),
        };
        let (target, open, stopped) = (proxy.target.clone(), proxy.open.clone(), proxy.stopped.clone());
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
                pipe(outbound, inbound);
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
