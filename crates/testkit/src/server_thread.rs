//! The thread behind a test server: a current-thread tokio runtime accepting connections on a
//! loopback listener until the handle is dropped.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::oneshot;

/// A running accept loop. Dropping it stops the loop, drops every connection task (closing its
/// socket and whatever else the task owns) and joins the thread.
pub(crate) struct ServerThread {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServerThread {
    /// Listens on `127.0.0.1` (an ephemeral port) and runs `on_connection(tcp, peer)` as a task
    /// of its own for every connection accepted, on a thread named `{name}-{port}`. The
    /// listener is bound before the thread starts, so connections made as soon as this returns
    /// wait in the backlog. Panics if the thread does not start within 10 s (test code).
    pub(crate) fn spawn<F, Fut>(name: &str, on_connection: F) -> Self
    where
        F: Fn(tokio::net::TcpStream, SocketAddr) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("{name}-{}", addr.port()))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                    let _ = ready_tx.send(());
                    loop {
                        tokio::select! {
                            _ = &mut stop_rx => return,
                            accepted = listener.accept() => {
                                let Ok((tcp, peer)) = accepted else { continue };
                                let _ = tcp.set_nodelay(true);
                                tokio::spawn(on_connection(tcp, peer));
                            }
                        }
                    }
                });
                runtime.shutdown_timeout(Duration::from_secs(1));
            })
            .unwrap();
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("the test server {name} did not start"));
        Self {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// The loopback address it listens on.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        // Dropping the sender stops the accept loop; the thread then shuts its runtime down.
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
