//! A fault-injecting TCP proxy for every directed peer link of a cluster.
//!
//! Node i's config names, for peer j, the proxy of the link i -> j (see
//! `raftgres_devcluster::cluster::PeerAddressMap`); that proxy forwards to j's real peer
//! address. One TCP connection of link i -> j carries i's requests to j
//! (the [`Direction::Request`] half) and j's answers back to i (the
//! [`Direction::Response`] half); j's own requests to i travel on link
//! j -> i. So "nothing from i reaches j" holds back the request half of
//! i -> j and the response half of j -> i:
//!
//! ```text
//!   node i ──► proxy i→j ──► node j      request half:  i's bytes to j
//!          ◄──            ◄──            response half: j's bytes to i
//!   node i ◄── proxy j→i ◄── node j      request half:  j's bytes to i
//!          ──►            ──►            response half: i's bytes to j
//! ```
//!
//! Faults, per link and half:
//! - blocked: bytes read in that half are held, not forwarded; new
//!   connections are accepted but carry nothing through a blocked half
//!   (a partition looks like silence, not like a refused connection);
//! - latency: each chunk is forwarded no earlier than `latency` after it
//!   was read (chunks keep their order; the delay does not accumulate).
//!
//! Every change of a link's faults closes the link's open connections, so
//! bytes held during a fault are dropped rather than delivered late, as a
//! lossy network would; gRPC reconnects on its own.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

/// Chunks in flight per connection half before the reader waits: bounds
/// the memory a blocked or slow half can hold.
const CHUNKS_IN_FLIGHT_MAX: usize = 256;
/// Largest chunk read at once.
const CHUNK_BYTES_MAX: usize = 64 * 1024;
/// How long an upstream connect may take before the client side is closed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// One half of a proxied connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Direction {
    /// From the connecting node to the listening one.
    Request,
    /// From the listening node back to the connecting one.
    Response,
}

/// The faults of one link; the default is a healthy link.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkFaults {
    /// The request half holds its bytes.
    pub request_blocked: bool,
    /// The response half holds its bytes.
    pub response_blocked: bool,
    /// Added one-way delay, both halves.
    pub latency: Duration,
}

impl LinkFaults {
    fn blocked(&self, direction: Direction) -> bool {
        match direction {
            Direction::Request => self.request_blocked,
            Direction::Response => self.response_blocked,
        }
    }
}

/// What a link's connections watch: its faults and a generation that
/// grows at every change, so that connections opened before it close.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct LinkState {
    faults: LinkFaults,
    generation: u64,
}

/// One proxy: listens on a loopback port and forwards to `target`.
pub struct LinkProxy {
    listen_address: SocketAddr,
    target: Arc<Mutex<String>>,
    state: watch::Sender<LinkState>,
    /// Bytes forwarded, by direction (for tests and reports).
    forwarded_bytes: Arc<[AtomicU64; 2]>,
    /// Connections accepted so far.
    connections: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl LinkProxy {
    /// A proxy to `target` on a fresh loopback port. Binds synchronously
    /// (so it can be made inside a sync config hook) and must be called
    /// within a tokio runtime.
    pub fn start(target: &str) -> std::io::Result<LinkProxy> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let listen_address = listener.local_addr()?;
        let listener = TcpListener::from_std(listener)?;
        let target = Arc::new(Mutex::new(target.to_string()));
        let (state, state_receiver) = watch::channel(LinkState::default());
        let forwarded_bytes = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
        let connections = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(accept_loop(
            listener,
            target.clone(),
            state_receiver,
            forwarded_bytes.clone(),
            connections.clone(),
        ));
        Ok(LinkProxy {
            listen_address,
            target,
            state,
            forwarded_bytes,
            connections,
            task,
        })
    }

    /// Where the proxy listens.
    pub fn address(&self) -> String {
        self.listen_address.to_string()
    }

    /// Points the proxy at a new target (a node restarted on another
    /// port); open connections close.
    pub fn retarget(&self, target: &str) {
        let changed = {
            let mut current = self.target.lock().unwrap_or_else(|e| e.into_inner());
            let changed = *current != target;
            *current = target.to_string();
            changed
        };
        if changed {
            self.state.send_modify(|state| state.generation += 1);
        }
    }

    /// The link's current faults.
    pub fn faults(&self) -> LinkFaults {
        self.state.borrow().faults
    }

    /// Replaces the link's faults; open connections close when they change.
    pub fn set_faults(&self, faults: LinkFaults) {
        self.state.send_if_modified(|state| {
            if state.faults == faults {
                return false;
            }
            state.faults = faults;
            state.generation += 1;
            true
        });
    }

    /// Bytes forwarded so far in `direction`.
    pub fn forwarded_bytes(&self, direction: Direction) -> u64 {
        self.forwarded_bytes[direction as usize].load(Ordering::Relaxed)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        // Aborting the accept loop drops the watch receivers' last sender
        // side only when `self.state` drops, which closes every connection.
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: Arc<Mutex<String>>,
    state: watch::Receiver<LinkState>,
    forwarded_bytes: Arc<[AtomicU64; 2]>,
    connections: Arc<AtomicU64>,
) {
    loop {
        let Ok((downstream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        connections.fetch_add(1, Ordering::Relaxed);
        let target = target.lock().unwrap_or_else(|e| e.into_inner()).clone();
        tokio::spawn(proxy_connection(
            downstream,
            target,
            state.clone(),
            forwarded_bytes.clone(),
        ));
    }
}

/// Forwards one connection until either side closes or the link's faults
/// change.
async fn proxy_connection(
    downstream: TcpStream,
    target: String,
    mut state: watch::Receiver<LinkState>,
    forwarded_bytes: Arc<[AtomicU64; 2]>,
) {
    let generation = state.borrow_and_update().generation;
    let connect = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&target));
    let upstream = tokio::select! {
        connected = connect => match connected {
            Ok(Ok(upstream)) => upstream,
            _ => return,
        },
        _ = changed(&mut state, generation) => return,
    };
    let _ = downstream.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (downstream_read, downstream_write) = downstream.into_split();
    let (upstream_read, upstream_write) = upstream.into_split();
    let request = pump(
        Direction::Request,
        generation,
        downstream_read,
        upstream_write,
        state.clone(),
        forwarded_bytes.clone(),
    );
    let response = pump(
        Direction::Response,
        generation,
        upstream_read,
        downstream_write,
        state.clone(),
        forwarded_bytes,
    );
    // The first half to end (a close, an error, a fault change) ends the
    // connection: dropping the other half closes both sockets.
    tokio::select! {
        _ = request => {}
        _ = response => {}
        _ = changed(&mut state, generation) => {}
    }
}

/// Resolves when the link's generation moves past `generation` (or the
/// proxy is gone).
async fn changed(state: &mut watch::Receiver<LinkState>, generation: u64) {
    loop {
        if state.borrow_and_update().generation != generation {
            return;
        }
        if state.changed().await.is_err() {
            return;
        }
    }
}

/// One half: a reader that stamps chunks and a writer that forwards each
/// no earlier than its stamp plus the link's latency, and not while the
/// half is blocked.
async fn pump(
    direction: Direction,
    generation: u64,
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    state: watch::Receiver<LinkState>,
    forwarded_bytes: Arc<[AtomicU64; 2]>,
) {
    let (sender, mut receiver) = mpsc::channel::<(Instant, Vec<u8>)>(CHUNKS_IN_FLIGHT_MAX);
    let reader = async move {
        let mut buffer = vec![0u8; CHUNK_BYTES_MAX];
        loop {
            match from.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(read) => {
                    if sender
                        .send((Instant::now(), buffer[..read].to_vec()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    };
    let writer = async move {
        let mut state = state;
        while let Some((read_at, chunk)) = receiver.recv().await {
            loop {
                let LinkState {
                    faults,
                    generation: current,
                } = *state.borrow();
                if current != generation {
                    // Bytes held through a fault are lost with it.
                    return;
                }
                if faults.blocked(direction) {
                    // Held until the fault changes, which closes us.
                    if state.changed().await.is_err() {
                        return;
                    }
                    continue;
                }
                let due = read_at + faults.latency;
                if Instant::now() < due {
                    tokio::select! {
                        _ = tokio::time::sleep_until(due.into()) => {}
                        changed = state.changed() => if changed.is_err() { return },
                    }
                    continue;
                }
                break;
            }
            if to.write_all(&chunk).await.is_err() {
                return;
            }
            forwarded_bytes[direction as usize].fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
    };
    // The reader finishing (end of stream) must still let the writer drain.
    let (_, ()) = tokio::join!(reader, writer);
}

/// How much of a network fault the proxies could carry out: directed
/// links it names, and of those, links with a proxy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkCoverage {
    /// Directed links the fault names.
    pub named: usize,
    /// Of those, links that go through a proxy.
    pub proxied: usize,
}

impl LinkCoverage {
    /// What to add to the fault's description: nothing when every link
    /// named has a proxy.
    pub fn note(&self) -> String {
        if self.proxied == self.named {
            String::new()
        } else {
            format!(
                " (only {} of {} links proxied: links into added nodes are not)",
                self.proxied, self.named
            )
        }
    }
}

/// A network fault between nodes, as the nemesis applies it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetworkFault {
    /// Nodes in different groups cannot exchange anything.
    Partition(Vec<Vec<u64>>),
    /// Nothing from `from` reaches `to`; the other direction works.
    Blackhole {
        /// The node whose messages are lost.
        from: u64,
        /// The node that no longer hears it.
        to: u64,
    },
    /// Every byte between `a` and `b` (both ways) waits `latency` more.
    Latency {
        /// One end.
        a: u64,
        /// The other end.
        b: u64,
        /// The added one-way delay.
        latency: Duration,
    },
}

/// Every directed link's proxy of one cluster, made on demand by the dev
/// cluster's peer address map.
#[derive(Clone, Default)]
pub struct ProxyMesh {
    links: Arc<Mutex<BTreeMap<(u64, u64), LinkProxy>>>,
}

impl ProxyMesh {
    /// An empty mesh.
    pub fn new() -> ProxyMesh {
        ProxyMesh::default()
    }

    /// The map to put into `DevClusterOptions::peer_address_map`: makes
    /// the proxy of each link the first time the link is named, and keeps
    /// it (retargeted if needed) across restarts so configs stay the same.
    pub fn peer_address_map(&self) -> raftgres_devcluster::cluster::PeerAddressMap {
        let mesh = self.clone();
        raftgres_devcluster::cluster::PeerAddressMap(Arc::new(
            move |link: raftgres_devcluster::cluster::PeerLink<'_>| {
                let mut links = mesh.lock();
                let proxy = links.entry((link.from, link.to)).or_insert_with(|| {
                    LinkProxy::start(link.address).expect("a loopback port for a peer proxy")
                });
                proxy.retarget(link.address);
                proxy.address()
            },
        ))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(u64, u64), LinkProxy>> {
        self.links.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The directed links, ascending.
    pub fn links(&self) -> Vec<(u64, u64)> {
        self.lock().keys().copied().collect()
    }

    /// Link `from -> to`'s faults.
    pub fn faults(&self, from: u64, to: u64) -> LinkFaults {
        self.lock()
            .get(&(from, to))
            .map(LinkProxy::faults)
            .unwrap_or_default()
    }

    /// Bytes link `from -> to` forwarded in `direction`.
    pub fn forwarded_bytes(&self, from: u64, to: u64, direction: Direction) -> u64 {
        self.lock()
            .get(&(from, to))
            .map(|proxy| proxy.forwarded_bytes(direction))
            .unwrap_or(0)
    }

    /// Per link: (from, to, connections accepted, request bytes, response
    /// bytes) so far, for telling a silent node from a silent proxy.
    pub fn traffic(&self) -> Vec<(u64, u64, u64, u64, u64)> {
        self.lock()
            .iter()
            .map(|((from, to), proxy)| {
                (
                    *from,
                    *to,
                    proxy.connections(),
                    proxy.forwarded_bytes(Direction::Request),
                    proxy.forwarded_bytes(Direction::Response),
                )
            })
            .collect()
    }

    /// Applies `fault` on top of the faults already in place. Returns how
    /// many of the directed links the fault names have a proxy, and how
    /// many it names: links into a node added during a campaign have none
    /// (see docs/NEMESIS.md), so a fault on them does less, or nothing.
    pub fn apply(&self, fault: &NetworkFault) -> LinkCoverage {
        let links = self.lock();
        let mut coverage = LinkCoverage::default();
        let mut update = |from: u64, to: u64, change: &dyn Fn(&mut LinkFaults)| {
            coverage.named += 1;
            if let Some(proxy) = links.get(&(from, to)) {
                coverage.proxied += 1;
                let mut faults = proxy.faults();
                change(&mut faults);
                proxy.set_faults(faults);
            }
        };
        match fault {
            NetworkFault::Partition(groups) => {
                let group_of = |node: u64| groups.iter().position(|group| group.contains(&node));
                let nodes: Vec<u64> = groups.iter().flatten().copied().collect();
                // Between the nodes the groups name; a link to a node no
                // group names is cut too, as before, uncounted.
                for &from in &nodes {
                    for &to in &nodes {
                        if group_of(from) != group_of(to) {
                            update(from, to, &|faults| {
                                faults.request_blocked = true;
                                faults.response_blocked = true;
                            });
                        }
                    }
                }
                for (&(from, to), proxy) in links.iter() {
                    let named = nodes.contains(&from) && nodes.contains(&to);
                    if !named && group_of(from) != group_of(to) {
                        let mut faults = proxy.faults();
                        faults.request_blocked = true;
                        faults.response_blocked = true;
                        proxy.set_faults(faults);
                    }
                }
            }
            NetworkFault::Blackhole { from, to } => {
                update(*from, *to, &|faults| faults.request_blocked = true);
                update(*to, *from, &|faults| faults.response_blocked = true);
            }
            NetworkFault::Latency { a, b, latency } => {
                update(*a, *b, &|faults| faults.latency = *latency);
                update(*b, *a, &|faults| faults.latency = *latency);
            }
        }
        coverage
    }

    /// Removes every fault.
    pub fn heal(&self) {
        for proxy in self.lock().values() {
            proxy.set_faults(LinkFaults::default());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server that upper-cases nothing: it sends back what it got.
    async fn echo_server() -> (String, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut buffer = [0u8; 1024];
                    loop {
                        match socket.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(read) => {
                                if socket.write_all(&buffer[..read]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        (address, task)
    }

    /// Sends `message` and waits up to `wait` for it to come back.
    async fn round_trip(socket: &mut TcpStream, message: &[u8], wait: Duration) -> Option<Vec<u8>> {
        socket.write_all(message).await.ok()?;
        let mut answer = vec![0u8; message.len()];
        match tokio::time::timeout(wait, socket.read_exact(&mut answer)).await {
            Ok(Ok(_)) => Some(answer),
            _ => None,
        }
    }

    #[tokio::test]
    async fn a_healthy_link_forwards_both_halves_and_counts_bytes() {
        let (target, _server) = echo_server().await;
        let proxy = LinkProxy::start(&target).unwrap();
        let mut socket = TcpStream::connect(proxy.address()).await.unwrap();
        let answer = round_trip(&mut socket, b"hello", Duration::from_secs(5)).await;
        assert_eq!(answer.as_deref(), Some(&b"hello"[..]));
        assert_eq!(proxy.forwarded_bytes(Direction::Request), 5);
        assert_eq!(proxy.forwarded_bytes(Direction::Response), 5);
    }

    #[tokio::test]
    async fn a_blocked_half_holds_bytes_and_healing_drops_the_connection() {
        let (target, _server) = echo_server().await;
        let proxy = LinkProxy::start(&target).unwrap();
        let mut socket = TcpStream::connect(proxy.address()).await.unwrap();
        assert!(round_trip(&mut socket, b"a", Duration::from_secs(5))
            .await
            .is_some());
        proxy.set_faults(LinkFaults {
            response_blocked: true,
            ..LinkFaults::default()
        });
        // The fault closed the old connection; a new one is accepted, its
        // request reaches the server, but no answer comes back.
        let mut socket = TcpStream::connect(proxy.address()).await.unwrap();
        let answer = round_trip(&mut socket, b"held", Duration::from_millis(300)).await;
        assert_eq!(answer, None);
        assert_eq!(proxy.forwarded_bytes(Direction::Request), 1 + 4);
        assert_eq!(proxy.forwarded_bytes(Direction::Response), 1);
        proxy.set_faults(LinkFaults::default());
        // The held answer is dropped with its connection, not delivered late.
        let mut rest = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut rest)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
        let mut socket = TcpStream::connect(proxy.address()).await.unwrap();
        let answer = round_trip(&mut socket, b"again", Duration::from_secs(5)).await;
        assert_eq!(answer.as_deref(), Some(&b"again"[..]));
    }

    #[tokio::test]
    async fn latency_delays_each_chunk_without_accumulating() {
        let (target, _server) = echo_server().await;
        let proxy = LinkProxy::start(&target).unwrap();
        proxy.set_faults(LinkFaults {
            latency: Duration::from_millis(100),
            ..LinkFaults::default()
        });
        let mut socket = TcpStream::connect(proxy.address()).await.unwrap();
        let started = Instant::now();
        for round in 0..3u8 {
            let answer = round_trip(&mut socket, &[round], Duration::from_secs(5)).await;
            assert_eq!(answer, Some(vec![round]));
        }
        let elapsed = started.elapsed();
        // Three round trips, each two delayed halves.
        assert!(elapsed >= Duration::from_millis(600), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    }

    #[tokio::test]
    async fn a_mesh_blackhole_cuts_one_direction_of_both_links() {
        let (target_two, _server_two) = echo_server().await;
        let (target_one, _server_one) = echo_server().await;
        let mesh = ProxyMesh::new();
        let map = mesh.peer_address_map();
        let one_to_two = (map.0)(raftgres_devcluster::cluster::PeerLink {
            from: 1,
            to: 2,
            address: &target_two,
        });
        let two_to_one = (map.0)(raftgres_devcluster::cluster::PeerLink {
            from: 2,
            to: 1,
            address: &target_one,
        });
        // Naming a link again keeps its proxy.
        let again = (map.0)(raftgres_devcluster::cluster::PeerLink {
            from: 1,
            to: 2,
            address: &target_two,
        });
        assert_eq!(one_to_two, again);
        assert_eq!(mesh.links(), [(1, 2), (2, 1)]);
        mesh.apply(&NetworkFault::Blackhole { from: 1, to: 2 });
        let blocked = LinkFaults {
            request_blocked: true,
            ..LinkFaults::default()
        };
        assert_eq!(mesh.faults(1, 2), blocked);
        let answers_blocked = LinkFaults {
            response_blocked: true,
            ..LinkFaults::default()
        };
        assert_eq!(mesh.faults(2, 1), answers_blocked);
        // 2's requests reach 1 (its echo server), but 1's answers do not.
        let mut socket = TcpStream::connect(&two_to_one).await.unwrap();
        assert_eq!(
            round_trip(&mut socket, b"x", Duration::from_millis(300)).await,
            None
        );
        assert_eq!(mesh.forwarded_bytes(2, 1, Direction::Request), 1);
        mesh.heal();
        assert_eq!(mesh.faults(1, 2), LinkFaults::default());
        let mut socket = TcpStream::connect(&one_to_two).await.unwrap();
        assert!(round_trip(&mut socket, b"y", Duration::from_secs(5))
            .await
            .is_some());
        let coverage = mesh.apply(&NetworkFault::Partition(vec![vec![1], vec![2]]));
        assert!(mesh.faults(1, 2).request_blocked && mesh.faults(2, 1).response_blocked);
        assert_eq!(
            coverage,
            LinkCoverage {
                named: 2,
                proxied: 2
            }
        );
        assert_eq!(coverage.note(), "");
        // Node 3 (added during a campaign) is reached directly: a fault on
        // its links does less than it says, and its description says so.
        mesh.heal();
        let coverage = mesh.apply(&NetworkFault::Partition(vec![vec![1], vec![2, 3]]));
        assert_eq!(
            coverage,
            LinkCoverage {
                named: 4,
                proxied: 2
            }
        );
        let coverage = mesh.apply(&NetworkFault::Blackhole { from: 3, to: 1 });
        assert_eq!(
            coverage,
            LinkCoverage {
                named: 2,
                proxied: 0
            }
        );
        assert!(
            coverage.note().contains("only 0 of 2 links proxied"),
            "{}",
            coverage.note()
        );
    }
}
