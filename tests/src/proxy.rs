//! A fault-injecting TCP proxy in front of every node of a cluster, with
//! faults per directed peer link.
//!
//! Every node is given, as node j's peer address, the address of j's
//! proxy (see `raftgres_devcluster::cluster::PeerAddressMap`, which also
//! covers `member add`, so nodes added during a campaign get a proxy too);
//! the proxy forwards to j's real peer address. Each node makes its peer
//! connections from a loopback address of its own
//! (`raftgres_devcluster::cluster::peer_source_address`), so the proxy
//! knows, per connection, which node i is calling: that connection
//! belongs to the directed link i -> j. It carries i's requests to j (the
//! [`Direction::Request`] half) and j's answers back to i (the
//! [`Direction::Response`] half); j's own requests to i travel on link
//! j -> i, through i's proxy. So "nothing from i reaches j" holds back the
//! request half of i -> j and the response half of j -> i:
//!
//! ```text
//!   node i ──► proxy of j ──► node j     link i→j, request half:  i's bytes to j
//!          ◄──             ◄──                     response half: j's bytes to i
//!   node i ◄── proxy of i ◄── node j     link j→i, request half:  j's bytes to i
//!          ──►             ──►                     response half: i's bytes to j
//! ```
//!
//! A connection from an address that is no node's (a client following a
//! leader hint to an added node, whose only address is its peer address)
//! is forwarded without faults: clients are not on the faulty network.
//!
//! Faults, per link and half:
//! - blocked: bytes read in that half are held, not forwarded; new
//!   connections are accepted but carry nothing through a blocked half
//!   (a partition looks like silence, not like a refused connection);
//! - latency: each chunk is forwarded no earlier than `latency` after it
//!   was read (chunks keep their order; the delay does not accumulate).
//!
//! A link's faults are a function of the network faults in place
//! ([`NetworkFault`]) and of its two ends, so a link that first carries a
//! connection while a fault is in place gets it too. Every change of a
//! link's faults closes the link's open connections, so bytes held during
//! a fault are dropped rather than delivered late, as a lossy network
//! would; gRPC reconnects on its own.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raftgres_devcluster::cluster::{
    peer_source_node, DevClusterOptions, PeerAddressMap, PeerTarget,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

/// Where the proxies listen: a loopback address no node uses.
const PROXY_HOST: &str = "127.0.0.2:0";

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

/// A network fault between nodes, as the nemesis applies it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetworkFault {
    /// Nodes in different groups cannot exchange anything; a node no group
    /// names is cut from every node a group names.
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

impl NetworkFault {
    /// What this fault does to link `from -> to`, on top of `faults`.
    fn add_to(&self, from: u64, to: u64, faults: &mut LinkFaults) {
        match self {
            NetworkFault::Partition(groups) => {
                let group_of = |node: u64| groups.iter().position(|group| group.contains(&node));
                if group_of(from) != group_of(to) {
                    faults.request_blocked = true;
                    faults.response_blocked = true;
                }
            }
            NetworkFault::Blackhole {
                from: source,
                to: sink,
            } => {
                if (from, to) == (*source, *sink) {
                    faults.request_blocked = true;
                }
                if (from, to) == (*sink, *source) {
                    faults.response_blocked = true;
                }
            }
            NetworkFault::Latency { a, b, latency } => {
                if (from, to) == (*a, *b) || (from, to) == (*b, *a) {
                    faults.latency = faults.latency.max(*latency);
                }
            }
        }
    }
}

/// The faults of link `from -> to` while `faults` are in place.
fn link_faults(faults: &[NetworkFault], from: u64, to: u64) -> LinkFaults {
    let mut link = LinkFaults::default();
    for fault in faults {
        fault.add_to(from, to, &mut link);
    }
    link
}

/// What a link's connections watch: its faults and a generation that
/// grows at every change, so that connections opened before it close.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct LinkState {
    faults: LinkFaults,
    generation: u64,
}

/// One directed link: its state and what it carried.
struct Link {
    state: watch::Sender<LinkState>,
    /// Bytes forwarded, by direction (for tests and reports).
    forwarded_bytes: Arc<[AtomicU64; 2]>,
    /// Connections accepted so far.
    connections: AtomicU64,
}

impl Link {
    fn new(faults: LinkFaults) -> Link {
        Link {
            state: watch::Sender::new(LinkState {
                faults,
                generation: 0,
            }),
            forwarded_bytes: Arc::new([AtomicU64::new(0), AtomicU64::new(0)]),
            connections: AtomicU64::new(0),
        }
    }

    /// Replaces the link's faults; open connections close when they change.
    fn set_faults(&self, faults: LinkFaults) {
        self.state.send_if_modified(|state| {
            if state.faults == faults {
                return false;
            }
            state.faults = faults;
            state.generation += 1;
            true
        });
    }

    /// Closes the link's open connections.
    fn reset(&self) {
        self.state.send_modify(|state| state.generation += 1);
    }
}

/// The proxy in front of one node: listens on a loopback port, forwards
/// to the node's peer address.
struct NodeProxy {
    listen_address: SocketAddr,
    target: Arc<Mutex<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for NodeProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Default)]
struct MeshState {
    /// The proxy in front of each node, by node.
    proxies: BTreeMap<u64, NodeProxy>,
    /// Every link that carried a connection (or was asked about).
    links: BTreeMap<(u64, u64), Arc<Link>>,
    /// The network faults in place, in the order applied.
    faults: Vec<NetworkFault>,
}

impl MeshState {
    /// Link `from -> to`, made with the faults in place if new.
    fn link(&mut self, from: u64, to: u64) -> Arc<Link> {
        let faults = &self.faults;
        self.links
            .entry((from, to))
            .or_insert_with(|| Arc::new(Link::new(link_faults(faults, from, to))))
            .clone()
    }

    /// Gives every link the faults now in place.
    fn refresh(&self) {
        for (&(from, to), link) in &self.links {
            link.set_faults(link_faults(&self.faults, from, to));
        }
    }
}

/// The proxies of one cluster, one per node, made on demand by the dev
/// cluster's peer address map, and the faults of every directed link.
#[derive(Clone, Default)]
pub struct ProxyMesh {
    state: Arc<Mutex<MeshState>>,
}

impl ProxyMesh {
    /// An empty mesh.
    pub fn new() -> ProxyMesh {
        ProxyMesh::default()
    }

    /// Puts every peer link of the cluster `options` start through this
    /// mesh: nodes call each other from addresses of their own, through
    /// the proxies of [`ProxyMesh::peer_address_map`].
    pub fn install(&self, options: &mut DevClusterOptions) {
        options.peer_address_map = Some(self.peer_address_map());
        options.distinct_peer_sources = true;
    }

    /// The map to put into `DevClusterOptions::peer_address_map` (with
    /// `distinct_peer_sources`): makes the proxy of each node the first
    /// time the node is named, and keeps it (retargeted if needed) across
    /// restarts so configs stay the same. Must be called within a tokio
    /// runtime.
    pub fn peer_address_map(&self) -> PeerAddressMap {
        let mesh = self.clone();
        PeerAddressMap(Arc::new(move |target: PeerTarget<'_>| {
            mesh.proxy_address(target.node, target.address)
                .expect("a loopback port for a peer proxy")
        }))
    }

    /// The address of node `node`'s proxy, made if new, forwarding to
    /// `target`; when the target moved, the node's links drop their
    /// connections.
    pub fn proxy_address(&self, node: u64, target: &str) -> std::io::Result<String> {
        let mut state = self.lock();
        if let Some(proxy) = state.proxies.get(&node) {
            let moved = {
                let mut current = proxy.target.lock().unwrap_or_else(|e| e.into_inner());
                let moved = *current != target;
                *current = target.to_string();
                moved
            };
            if moved {
                for (_, link) in state.links.iter().filter(|((_, to), _)| *to == node) {
                    link.reset();
                }
            }
            return Ok(proxy.listen_address.to_string());
        }
        // Binds synchronously, so that it can run inside a sync config hook.
        // On 127.0.0.2: the cluster picks its nodes' ports on 127.0.0.1
        // before they bind them, and the kernel may hand this listener one
        // of those (a node then fails to start with "address in use").
        let listener = std::net::TcpListener::bind(PROXY_HOST)?;
        listener.set_nonblocking(true)?;
        let listen_address = listener.local_addr()?;
        let listener = TcpListener::from_std(listener)?;
        let target = Arc::new(Mutex::new(target.to_string()));
        let task = tokio::spawn(accept_loop(
            listener,
            node,
            target.clone(),
            Arc::downgrade(&self.state),
        ));
        state.proxies.insert(
            node,
            NodeProxy {
                listen_address,
                target,
                task,
            },
        );
        Ok(listen_address.to_string())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MeshState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The directed links that carried a connection, ascending.
    pub fn links(&self) -> Vec<(u64, u64)> {
        self.lock().links.keys().copied().collect()
    }

    /// Link `from -> to`'s faults.
    pub fn faults(&self, from: u64, to: u64) -> LinkFaults {
        link_faults(&self.lock().faults, from, to)
    }

    /// Bytes link `from -> to` forwarded in `direction`.
    pub fn forwarded_bytes(&self, from: u64, to: u64, direction: Direction) -> u64 {
        self.lock().links.get(&(from, to)).map_or(0, |link| {
            link.forwarded_bytes[direction as usize].load(Ordering::Relaxed)
        })
    }

    /// Per link: (from, to, connections accepted, request bytes, response
    /// bytes) so far, for telling a silent node from a silent proxy.
    pub fn traffic(&self) -> Vec<(u64, u64, u64, u64, u64)> {
        self.lock()
            .links
            .iter()
            .map(|((from, to), link)| {
                let bytes = |direction: Direction| {
                    link.forwarded_bytes[direction as usize].load(Ordering::Relaxed)
                };
                (
                    *from,
                    *to,
                    link.connections.load(Ordering::Relaxed),
                    bytes(Direction::Request),
                    bytes(Direction::Response),
                )
            })
            .collect()
    }

    /// Applies `fault` on top of the faults already in place, to every link
    /// it names, including links that carry their first connection later.
    pub fn apply(&self, fault: &NetworkFault) {
        let mut state = self.lock();
        state.faults.push(fault.clone());
        state.refresh();
    }

    /// Removes every fault.
    pub fn heal(&self) {
        let mut state = self.lock();
        state.faults.clear();
        state.refresh();
    }
}

async fn accept_loop(
    listener: TcpListener,
    node: u64,
    target: Arc<Mutex<String>>,
    mesh: std::sync::Weak<Mutex<MeshState>>,
) {
    loop {
        let Ok((downstream, caller)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let Some(mesh) = mesh.upgrade() else {
            return;
        };
        // A caller that is no node gets a link of its own, never faulted.
        let link = match peer_source_node(caller.ip()) {
            Some(from) => mesh
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .link(from, node),
            None => Arc::new(Link::new(LinkFaults::default())),
        };
        link.connections.fetch_add(1, Ordering::Relaxed);
        let target = target.lock().unwrap_or_else(|e| e.into_inner()).clone();
        tokio::spawn(proxy_connection(downstream, target, link));
    }
}

/// Forwards one connection until either side closes or the link's faults
/// change.
async fn proxy_connection(downstream: TcpStream, target: String, link: Arc<Link>) {
    // The link lives as long as its connection: a caller that is no node
    // has a link of its own, which nothing else holds.
    let mut state = link.state.subscribe();
    let forwarded_bytes = link.forwarded_bytes.clone();
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

#[cfg(test)]
mod tests {
    use super::*;
    use raftgres_devcluster::cluster::peer_source_address;

    /// An echo server: it sends back what it got.
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

    /// A connection to `address` made as node `from` would make it.
    async fn connect_as(from: u64, address: &str) -> TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(SocketAddr::from((peer_source_address(from), 0)))
            .unwrap();
        socket.connect(address.parse().unwrap()).await.unwrap()
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

    /// Asserts that the proxy closes `socket` within [`LONG`], delivering
    /// nothing more.
    async fn assert_closed(socket: &mut TcpStream) {
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(LONG, socket.read_to_end(&mut rest)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
    }

    const LONG: Duration = Duration::from_secs(5);
    const SHORT: Duration = Duration::from_millis(300);

    #[tokio::test]
    async fn a_healthy_link_forwards_both_halves_and_counts_bytes_per_caller() {
        let (target, _server) = echo_server().await;
        let mesh = ProxyMesh::new();
        let proxy = mesh.proxy_address(2, &target).unwrap();
        let mut from_one = connect_as(1, &proxy).await;
        let answer = round_trip(&mut from_one, b"hello", LONG).await;
        assert_eq!(answer.as_deref(), Some(&b"hello"[..]));
        let mut from_three = connect_as(3, &proxy).await;
        assert!(round_trip(&mut from_three, b"hi", LONG).await.is_some());
        assert_eq!(mesh.links(), [(1, 2), (3, 2)]);
        assert_eq!(mesh.forwarded_bytes(1, 2, Direction::Request), 5);
        assert_eq!(mesh.forwarded_bytes(1, 2, Direction::Response), 5);
        assert_eq!(mesh.forwarded_bytes(3, 2, Direction::Request), 2);
        // A caller that is no node is forwarded, and counted on no link.
        let mut client = TcpStream::connect(&proxy).await.unwrap();
        assert!(round_trip(&mut client, b"x", LONG).await.is_some());
        assert_eq!(mesh.links(), [(1, 2), (3, 2)]);
    }

    #[tokio::test]
    async fn a_blocked_half_holds_bytes_and_healing_drops_the_connection() {
        let (target, _server) = echo_server().await;
        let mesh = ProxyMesh::new();
        let proxy = mesh.proxy_address(2, &target).unwrap();
        let mut socket = connect_as(1, &proxy).await;
        assert!(round_trip(&mut socket, b"a", LONG).await.is_some());
        // Node 2's answers to node 1 are lost.
        mesh.apply(&NetworkFault::Blackhole { from: 2, to: 1 });
        assert_eq!(
            mesh.faults(1, 2),
            LinkFaults {
                response_blocked: true,
                ..LinkFaults::default()
            }
        );
        // The fault closed the old connection; a new one is accepted, its
        // request reaches the server, but no answer comes back.
        let mut socket = connect_as(1, &proxy).await;
        assert_eq!(round_trip(&mut socket, b"held", SHORT).await, None);
        assert_eq!(mesh.forwarded_bytes(1, 2, Direction::Request), 1 + 4);
        assert_eq!(mesh.forwarded_bytes(1, 2, Direction::Response), 1);
        // Another caller's link is untouched.
        let mut from_three = connect_as(3, &proxy).await;
        assert!(round_trip(&mut from_three, b"ok", LONG).await.is_some());
        mesh.heal();
        // The held answer is dropped with its connection, not delivered late.
        assert_closed(&mut socket).await;
        let mut socket = connect_as(1, &proxy).await;
        let answer = round_trip(&mut socket, b"again", LONG).await;
        assert_eq!(answer.as_deref(), Some(&b"again"[..]));
    }

    #[tokio::test]
    async fn latency_delays_each_chunk_without_accumulating() {
        let (target, _server) = echo_server().await;
        let mesh = ProxyMesh::new();
        let proxy = mesh.proxy_address(2, &target).unwrap();
        mesh.apply(&NetworkFault::Latency {
            a: 1,
            b: 2,
            latency: Duration::from_millis(100),
        });
        let mut socket = connect_as(1, &proxy).await;
        let started = Instant::now();
        for round in 0..3u8 {
            let answer = round_trip(&mut socket, &[round], LONG).await;
            assert_eq!(answer, Some(vec![round]));
        }
        let elapsed = started.elapsed();
        // Three round trips, each two delayed halves.
        assert!(elapsed >= Duration::from_millis(600), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    }

    #[tokio::test]
    async fn a_fault_reaches_links_that_carry_their_first_connection_later() {
        let (target, _server) = echo_server().await;
        let mesh = ProxyMesh::new();
        // Node 4 joins while 1 is partitioned from {2, 4}: its first
        // connection to 2 is in a group with 2 and works, node 1's does not.
        mesh.apply(&NetworkFault::Partition(vec![vec![1], vec![2, 4]]));
        let proxy = mesh.proxy_address(2, &target).unwrap();
        let mut from_four = connect_as(4, &proxy).await;
        assert!(round_trip(&mut from_four, b"in", LONG).await.is_some());
        let mut from_one = connect_as(1, &proxy).await;
        assert_eq!(round_trip(&mut from_one, b"cut", SHORT).await, None);
        // A node no group names (5, added later) is cut from all of them.
        let mut from_five = connect_as(5, &proxy).await;
        assert_eq!(round_trip(&mut from_five, b"cut", SHORT).await, None);
        assert_eq!(mesh.forwarded_bytes(5, 2, Direction::Request), 0);
        mesh.heal();
        let mut from_five = connect_as(5, &proxy).await;
        assert!(round_trip(&mut from_five, b"ok", LONG).await.is_some());
    }

    #[tokio::test]
    async fn the_address_map_keeps_one_proxy_per_node_and_retargets_it() {
        let (first, _first_server) = echo_server().await;
        let (second, _second_server) = echo_server().await;
        let mesh = ProxyMesh::new();
        let map = mesh.peer_address_map();
        let proxy = (map.0)(PeerTarget {
            node: 2,
            address: &first,
        });
        let mut socket = connect_as(1, &proxy).await;
        assert!(round_trip(&mut socket, b"a", LONG).await.is_some());
        // Node 2 restarted on another port: same proxy, old connections close.
        let again = (map.0)(PeerTarget {
            node: 2,
            address: &second,
        });
        assert_eq!(proxy, again);
        assert_closed(&mut socket).await;
        let mut socket = connect_as(1, &proxy).await;
        assert!(round_trip(&mut socket, b"b", LONG).await.is_some());
        let other = (map.0)(PeerTarget {
            node: 3,
            address: &first,
        });
        assert_ne!(proxy, other);
    }

    #[test]
    fn link_faults_follow_each_kind_of_fault() {
        let blocked_both = LinkFaults {
            request_blocked: true,
            response_blocked: true,
            ..LinkFaults::default()
        };
        let partition = [NetworkFault::Partition(vec![vec![1], vec![2, 3]])];
        assert_eq!(link_faults(&partition, 1, 2), blocked_both);
        assert_eq!(link_faults(&partition, 3, 1), blocked_both);
        assert_eq!(link_faults(&partition, 2, 3), LinkFaults::default());
        let blackhole = [NetworkFault::Blackhole { from: 1, to: 2 }];
        assert!(link_faults(&blackhole, 1, 2).request_blocked);
        assert!(!link_faults(&blackhole, 1, 2).response_blocked);
        assert!(link_faults(&blackhole, 2, 1).response_blocked);
        assert!(!link_faults(&blackhole, 2, 1).request_blocked);
        assert_eq!(link_faults(&blackhole, 1, 3), LinkFaults::default());
        let slow = Duration::from_millis(40);
        let both = [
            NetworkFault::Latency {
                a: 1,
                b: 2,
                latency: slow,
            },
            NetworkFault::Blackhole { from: 2, to: 1 },
        ];
        let link = link_faults(&both, 2, 1);
        assert_eq!(link.latency, slow);
        assert!(link.request_blocked);
        assert_eq!(link_faults(&both, 1, 3), LinkFaults::default());
    }
}
