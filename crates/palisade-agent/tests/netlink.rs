//! The netlink reader and watcher against the kernel, in scratch network
//! namespaces (root; skipped with the reason printed otherwise, except in
//! CI, which runs as root and must not skip).

use std::net::IpAddr;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use palisade_agent::facts::NodeFacts;
use palisade_agent::netlink;

const TIMEOUT: Duration = Duration::from_secs(10);

/// A network namespace that is deleted when the test ends, however it ends.
struct Netns(String);

impl Netns {
    fn name(&self) -> Option<&str> {
        Some(&self.0)
    }

    /// Runs `ip -n <ns> ARGS` (or `bridge -n <ns> ARGS`) and insists on success.
    fn run(&self, tool: &str, args: &str) {
        let mut argv = vec!["-n", &self.0];
        argv.extend(args.split_whitespace());
        let out = Command::new(tool).args(&argv).output().expect(tool);
        assert!(
            out.status.success(),
            "{tool} {}: {}",
            argv.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn ip(&self, args: &str) {
        self.run("ip", args)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn is_root() -> bool {
    // SAFETY: no arguments, no failure mode.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs this suite as root"
        );
        eprintln!("skipped: needs root");
    }
    root
}

fn netns(tag: &str) -> Netns {
    let name = format!("pl-nlt-{tag}-{}", std::process::id());
    let ok = Command::new("ip")
        .args(["netns", "add", &name])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "ip netns add {name}");
    let ns = Netns(name);
    ns.ip("link set lo up");
    ns
}

fn index(facts: &NodeFacts, name: &str) -> u32 {
    facts
        .link_named(name)
        .unwrap_or_else(|| panic!("no link {name} in {:?}", facts.links))
        .index
}

/// A namespace `tag` and a pod namespace `tag-pod` whose `eth0` is the
/// peer of the namespace's veth `veth`; both down and unaddressed.
fn with_pod(tag: &str, veth: &str) -> (Netns, Netns) {
    let ns = netns(tag);
    let pod = netns(&format!("{tag}-pod"));
    ns.ip(&format!(
        "link add {veth} type veth peer name eth0 netns {}",
        pod.0
    ));
    (ns, pod)
}

#[test]
fn read_sees_veths_routes_bridges_neighbours_and_fdb() {
    if !is_root() {
        return;
    }
    let (ns, _pod) = with_pod("read", "veth-a");
    ns.ip("link set veth-a up");
    ns.ip("route add 10.9.0.5/32 dev veth-a");
    ns.ip("route add fd09::5/128 dev veth-a");
    ns.ip("route add default dev veth-a");
    ns.ip("-6 route add default dev veth-a");
    ns.ip("route add 10.9.8.0/24 via 10.9.0.5 dev veth-a onlink table 1000");
    ns.ip("link add br0 type bridge");
    ns.ip("link add veth-b type veth peer name veth-b-pod");
    ns.ip("link set veth-b master br0");
    ns.ip("link set br0 up");
    ns.ip("link set veth-b up");
    ns.ip("neigh add 10.9.1.7 lladdr 02:00:00:00:00:07 dev br0 nud permanent");
    ns.run(
        "bridge",
        "fdb add 02:00:00:00:00:07 dev veth-b master static",
    );

    let facts = netlink::read(ns.name()).expect("read");

    let veth = facts.link_named("veth-a").expect("veth-a");
    assert_eq!(veth.kind.as_deref(), Some("veth"));
    assert!(veth.peer_netns, "veth-a's peer is in another namespace");
    assert!(veth.up);
    assert!(veth.mac.is_some());
    let local = facts.link_named("veth-b-pod").expect("veth-b-pod");
    assert!(
        !local.peer_netns,
        "veth-b-pod's peer is in the same namespace"
    );
    let lo = facts.link_named("lo").expect("lo");
    assert_eq!(lo.kind, None);

    for dst in ["10.9.0.5/32", "fd09::5/128"] {
        let dst = dst.parse().unwrap();
        let route = facts
            .routes
            .iter()
            .find(|r| r.dst == dst)
            .unwrap_or_else(|| panic!("no route to {dst} in {:?}", facts.routes));
        assert_eq!(route.oif, Some(veth.index));
        assert_eq!(route.table, 254);
        assert_eq!(route.gateway, None);
    }
    for dst in ["0.0.0.0/0", "::/0"] {
        let dst = dst.parse().unwrap();
        assert!(
            facts
                .routes
                .iter()
                .any(|r| r.dst == dst && r.oif == Some(veth.index)),
            "no default route {dst} in {:?}",
            facts.routes
        );
    }
    // Table ids above 255 only fit RTA_TABLE, not the header's byte.
    let via: IpAddr = "10.9.0.5".parse().unwrap();
    let dst = "10.9.8.0/24".parse().unwrap();
    let routed = facts
        .routes
        .iter()
        .find(|r| r.dst == dst)
        .expect("10.9.8.0/24");
    assert_eq!((routed.table, routed.gateway), (1000, Some(via)));
    assert!(
        facts
            .routes
            .iter()
            .all(|r| !matches!(r.dst.addr(), IpAddr::V4(a) if a.is_loopback())),
        "the local table's `local` routes are not unicast: {:?}",
        facts.routes
    );

    let br0 = index(&facts, "br0");
    assert_eq!(facts.link(br0).unwrap().kind.as_deref(), Some("bridge"));
    let port = index(&facts, "veth-b");
    assert_eq!(facts.link(port).unwrap().master, Some(br0));

    let mac = [2, 0, 0, 0, 0, 7];
    let addr: IpAddr = "10.9.1.7".parse().unwrap();
    let neigh = facts
        .neighs
        .iter()
        .find(|n| n.addr == addr)
        .unwrap_or_else(|| panic!("no neighbour {addr} in {:?}", facts.neighs));
    assert_eq!(neigh.index, br0);
    assert_eq!(neigh.mac, Some(mac));
    assert_eq!(neigh.state, libc::NUD_PERMANENT);

    let fdb = facts
        .fdb
        .iter()
        .find(|f| f.mac == mac)
        .unwrap_or_else(|| panic!("no fdb entry for {mac:?} in {:?}", facts.fdb));
    assert_eq!(fdb.port, port);
    assert_eq!(fdb.master, Some(br0));
    assert!(
        !fdb.permanent,
        "a static entry is not the port's own address"
    );
    // The port's own address is in the bridge's fdb as a permanent entry.
    let own = facts.link(port).unwrap().mac.unwrap();
    assert!(
        facts
            .fdb
            .iter()
            .any(|f| f.mac == own && f.port == port && f.master == Some(br0) && f.permanent),
        "{:?}",
        facts.fdb
    );
}

#[test]
fn watch_reports_changes_and_stops_when_told() {
    if !is_root() {
        return;
    }
    let ns = netns("watch");
    ns.ip("link add w0 type veth peer name w0p");
    ns.ip("link set w0 up");
    let (tx, rx) = mpsc::channel();
    let (fail_tx, fail_rx) = mpsc::channel();
    let mut calls = 0;
    let handle = netlink::watch(
        ns.name(),
        move || {
            calls += 1;
            // Keep going for the route and the link; stop at the third.
            let _ = tx.send(calls);
            calls < 3
        },
        move |e| {
            let _ = fail_tx.send(e.to_string());
        },
    )
    .expect("watch");

    ns.ip("route add 10.9.2.0/24 dev w0");
    rx.recv_timeout(TIMEOUT)
        .expect("a route change is reported");
    while rx.try_recv().is_ok() {}
    ns.ip("link add w1 type veth peer name w1p");
    rx.recv_timeout(TIMEOUT).expect("a link change is reported");

    // Keep changing things until the callback has said stop; the thread
    // must then end on its own.
    let deadline = Instant::now() + TIMEOUT;
    let mut n = 0;
    while !handle.is_finished() {
        assert!(Instant::now() < deadline, "the watch did not stop");
        ns.ip(&format!("route add 10.9.3.{n}/32 dev w0"));
        n += 1;
        let _ = rx.recv_timeout(Duration::from_millis(200));
    }
    handle.join().expect("the watch thread ends cleanly");
    assert!(fail_rx.try_recv().is_err(), "no failure was reported");
}

#[test]
fn poke_resolves_the_neighbour_of_an_address() {
    if !is_root() {
        return;
    }
    let (ns, pod) = with_pod("poke", "veth-p");
    ns.ip("addr add 10.9.4.1/24 dev veth-p");
    ns.ip("link set veth-p up");
    pod.ip("addr add 10.9.4.2/24 dev eth0");
    pod.ip("link set eth0 up");
    let addr: IpAddr = "10.9.4.2".parse().unwrap();

    let before = netlink::read(ns.name()).expect("read");
    assert!(!before.neighs.iter().any(|n| n.addr == addr));
    let pod_mac = netlink::read(pod.name())
        .expect("read the pod")
        .link_named("eth0")
        .and_then(|l| l.mac);

    let deadline = Instant::now() + TIMEOUT;
    loop {
        netlink::poke(ns.name(), &[addr, "10.200.0.1".parse().unwrap()]).expect("poke");
        let facts = netlink::read(ns.name()).expect("read");
        let veth = facts.link_named("veth-p").unwrap().index;
        let found = facts
            .neighs
            .iter()
            .find(|n| n.addr == addr && n.index == veth && n.mac.is_some());
        if let Some(neigh) = found {
            assert_eq!(neigh.mac, pod_mac);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no neighbour for {addr}: {:?}",
            facts.neighs
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_missing_namespace_is_named_in_the_error() {
    if !is_root() {
        return;
    }
    let err = netlink::read(Some("pl-nlt-does-not-exist")).expect_err("no such namespace");
    let msg = err.to_string();
    assert!(msg.contains("pl-nlt-does-not-exist"), "{msg}");
    assert!(msg.starts_with("cannot enter network namespace"), "{msg}");
}

#[test]
fn in_netns_runs_inside_the_namespace() {
    if !is_root() {
        return;
    }
    let ns = netns("in");
    ns.ip("link add w7 type veth peer name w7p");
    ns.ip("addr add 10.9.5.1/32 dev w7");
    ns.ip("link set w7 up");
    // The address exists only in the namespace, so binding it proves where
    // the closure ran; the socket keeps working from this thread.
    let socket = netlink::in_netns(ns.name(), || std::net::UdpSocket::bind("10.9.5.1:0"))
        .expect("bind inside the namespace");
    let local = socket.local_addr().unwrap();
    socket
        .send_to(b"x", local)
        .expect("send within the namespace");
    let mut buf = [0; 1];
    socket.set_read_timeout(Some(TIMEOUT)).unwrap();
    assert_eq!(socket.recv(&mut buf).expect("receive"), 1);

    let failed = netlink::in_netns(ns.name(), || -> std::io::Result<()> {
        Err(std::io::Error::other("boom"))
    })
    .expect_err("the closure's error comes back");
    let msg = failed.to_string();
    assert!(msg.contains("boom") && msg.contains(&ns.0), "{msg}");
}
