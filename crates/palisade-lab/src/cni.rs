//! CNI wiring: the lab wires each pod as a container runtime does, with a
//! standard CNI plugin (`ptp` or `bridge`, IPAM `host-local`), instead of its
//! own veth. What the node agent then finds in the kernel (routes, bridges,
//! interface names) is what a real node has.
//!
//! # How a pod is wired
//!
//! The lab creates the pod's namespace, then runs the plugin inside the
//! *node's* namespace (the node plays the host): `ip netns exec <node>
//! <bin>/<plugin>` with `CNI_COMMAND=ADD`, `CNI_CONTAINERID` (the pod's
//! namespace name, unique across labs), `CNI_NETNS=/run/netns/<pod>`,
//! `CNI_IFNAME=eth0`, `CNI_PATH` (the plugin directory) and `CNI_ARGS`
//! (`IgnoreUnknown=1` and the pod's `K8S_POD_NAMESPACE`/`K8S_POD_NAME`, as
//! the kubelet passes them), and the network configuration on stdin. The
//! `cniVersion` is the newest of 1.0.0, 0.4.0 and 0.3.1 that the plugin
//! reports on `VERSION`.
//!
//! # Addresses
//!
//! Pods keep the cluster's addresses: the engine's verdicts (ipBlocks
//! included) are about them. The configuration asks `host-local` for them
//! through the `ips` capability: `"capabilities": {"ips": true}` and
//! `"runtimeConfig": {"ips": [...]}`, which is how a runtime passes
//! requested addresses (`CNI_ARGS` `IP=` takes a single address, so it
//! cannot ask for a dual-stack pair). Each node has one range per address
//! family: the smallest subnet of at most /24 (IPv4) or /64 (IPv6) that
//! holds all of the node's pod addresses of that family as addresses
//! `host-local` hands out, with as gateway the first address in it that no
//! pod or node of the cluster has. One subnet per node and family, not one
//! per address, because the bridge plugin gives its bridge a single IPv4
//! gateway address (a second IPv4 subnet on one bridge is an error). A pod
//! gets one range set per family it has; a family it lacks gets none
//! (`host-local` would otherwise allocate it an address). The result must
//! give exactly the requested addresses, else the lab fails naming the pod.
//! Leases live under the lab's own `/run/palisade-lab/<lab>-ipam/n<i>` (one
//! directory per node, as each real node has its own), never in
//! `/var/lib/cni`.
//!
//! # ptp
//!
//! One veth per pod; the node's end carries the gateway addresses (/32,
//! /128) and a host route to each of the pod's addresses; the pod routes its
//! subnet and the default via the gateway.
//!
//! # bridge
//!
//! One bridge `cni0` per node (`isGateway`, no masquerading, no hairpin); the
//! node's veth ends are its ports and the bridge carries the gateways with
//! the subnets' prefixes, so the node has no per-pod routes. Pods of
//! different nodes may share a subnet (the cluster decides addresses, and
//! nodes' subnets overlap whenever their pods' addresses interleave), so a pod
//! sends to a remote pod in its own subnet directly, with ARP or neighbour
//! discovery on its bridge. The node answers for those: proxy ARP on `cni0`
//! answers for every address the node routes out of another interface
//! (each remote pod's address has a /32 route via `fab0`, more specific than
//! the bridge's subnet route), and a proxy NDP entry on `cni0` for each
//! remote pod's IPv6 address does the same for IPv6; the proxy delay is 0 so
//! that the first packet is not held back. This works whatever the
//! addresses are; subnets of their own for each node would not, as a
//! cluster's addresses may interleave (10.0.1.1 and 10.0.1.3 on one node,
//! 10.0.1.2 on another). Bridged traffic between pods of one node passes
//! the node's `inet` forward hook: `net.bridge.bridge-nf-call-iptables` and
//! `-ip6tables` are set to 1 in the node's namespace (which needs the
//! `br_netfilter` module).
//!
//! # Teardown
//!
//! [`crate::down`] runs `CNI_COMMAND=DEL` for every pod, with the same
//! environment and configuration (and the ADD result as `prevResult`), from
//! the state file alone, before it deletes the namespaces; failures are
//! reported and do not stop the teardown. Then it removes the IPAM
//! directory.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use ipnet::IpNet;
use palisade_model::Cluster;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::{io_err, Error, PodState, Result, State, STATE_DIR};

/// Where Debian's `containernetworking-plugins` installs the plugins.
pub const DEFAULT_BIN_DIR: &str = "/usr/lib/cni";

/// The pod's interface, as runtimes name it.
pub const IFNAME: &str = "eth0";

/// The bridge of `bridge` mode.
pub const BRIDGE: &str = "cni0";

/// The CNI network's name (`host-local` keeps its leases under it).
pub const NETWORK: &str = "palisade-lab";

/// Versions the lab speaks, newest first; all have the same result shape.
const VERSIONS: &[&str] = &["1.0.0", "0.4.0", "0.3.1"];

/// The CNI plugin that wires the lab's pods.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CniPlugin {
    /// One veth per pod, a host route to it.
    Ptp,
    /// One bridge per node, the pods' veths its ports.
    Bridge,
}

impl CniPlugin {
    /// The plugin's binary (and `type`).
    pub fn binary(&self) -> &'static str {
        match self {
            CniPlugin::Ptp => "ptp",
            CniPlugin::Bridge => "bridge",
        }
    }
}

/// CNI wiring of a lab ([`crate::Config::cni`]).
#[derive(Clone, Debug)]
pub struct Cni {
    pub plugin: CniPlugin,
    /// Where the plugin binaries are (default [`DEFAULT_BIN_DIR`]); also
    /// the plugins' `CNI_PATH`.
    pub bin_dir: PathBuf,
}

impl Cni {
    /// `plugin` from [`DEFAULT_BIN_DIR`].
    pub fn new(plugin: CniPlugin) -> Cni {
        Cni {
            plugin,
            bin_dir: PathBuf::from(DEFAULT_BIN_DIR),
        }
    }
}

/// What `DEL` needs of one pod, kept in the state file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PodCni {
    pub container_id: String,
    /// `CNI_ARGS`.
    pub args: String,
    /// The network configuration given to ADD.
    pub netconf: Value,
    /// The plugin's ADD result, once it succeeded (`prevResult` of DEL).
    #[serde(default)]
    pub result: Option<Value>,
}

/// The IPAM directory of lab `name`.
pub fn ipam_dir(name: &str) -> PathBuf {
    PathBuf::from(STATE_DIR).join(format!("{name}-ipam"))
}

// ------------------------------------------------------ pure: netconf

/// One `host-local` range: the subnet a requested address lies in and its
/// gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Range {
    pub subnet: IpNet,
    pub gateway: IpAddr,
}

/// A node's range for one address family: the smallest subnet of at most
/// /24 (IPv4) or /64 (IPv6) that holds `ips` (the node's addresses of that
/// family), widened by up to 8 bits while one of them is an address
/// `host-local` does not hand out (the network address, for IPv4 also the
/// broadcast address); with as gateway its first address that is none of
/// `ips` and not in `taken`.
pub fn node_range(ips: &[IpAddr], taken: &BTreeSet<IpAddr>) -> std::result::Result<Range, String> {
    let Some(&first) = ips.first() else {
        return Err("no address".into());
    };
    let v4 = first.is_ipv4();
    if ips.iter().any(|a| a.is_ipv4() != v4) {
        return Err(format!("addresses of both families in one range: {ips:?}"));
    }
    let num = |a: &IpAddr| match a {
        IpAddr::V4(a) => u128::from(u32::from(*a)),
        IpAddr::V6(a) => u128::from(*a),
    };
    let lo = ips.iter().map(num).min().expect("not empty");
    let hi = ips.iter().map(num).max().expect("not empty");
    let (bits, longest) = if v4 { (32, 24) } else { (128, 64) };
    let common = (lo ^ hi).leading_zeros() - (128 - bits);
    let covering = common.min(longest) as u8;
    let mut prefix = covering;
    let subnet = loop {
        let subnet = IpNet::new(first, prefix).expect("valid prefix").trunc();
        let usable = |a: &IpAddr| *a != subnet.network() && (!v4 || *a != subnet.broadcast());
        if ips.iter().all(usable) {
            break subnet;
        }
        if prefix == 0 || prefix + 8 == covering {
            return Err(format!(
                "no subnet from /{covering} to /{prefix} has all of {ips:?} as host addresses \
                 (one is its network or broadcast address)"
            ));
        }
        prefix -= 1;
    };
    subnet
        .hosts()
        .filter(|a| *a != subnet.network())
        .find(|a| !ips.contains(a) && !taken.contains(a))
        .map(|gateway| Range { subnet, gateway })
        .ok_or_else(|| format!("no free gateway address in {subnet}"))
}

/// The network configuration that wires a pod with `ips` using `plugin`,
/// its leases under `data_dir`, from its node's `ranges` (one per family).
pub fn netconf(
    plugin: &CniPlugin,
    cni_version: &str,
    data_dir: &Path,
    ips: &[IpAddr],
    ranges: &[Range],
) -> std::result::Result<Value, String> {
    if ips.is_empty() {
        return Err("the pod has no address".into());
    }
    let mut requested = Vec::new();
    let mut sets = Vec::new();
    let mut routes = Vec::new();
    for v4 in [true, false] {
        let fam: Vec<IpAddr> = ips.iter().copied().filter(|a| a.is_ipv4() == v4).collect();
        if fam.len() > 1 {
            return Err(format!(
                "more than one IPv{} address ({fam:?}): host-local gives one per family",
                if v4 { 4 } else { 6 }
            ));
        }
        let Some(&ip) = fam.first() else { continue };
        let r = ranges
            .iter()
            .find(|r| r.subnet.contains(&ip))
            .ok_or_else(|| format!("no range holds {ip}"))?;
        requested.push(format!("{ip}/{}", r.subnet.prefix_len()));
        sets.push(json!([{"subnet": r.subnet.to_string(), "gateway": r.gateway.to_string()}]));
        routes.push(json!({"dst": if v4 { "0.0.0.0/0" } else { "::/0" }}));
    }
    let mut conf = json!({
        "cniVersion": cni_version,
        "name": NETWORK,
        "type": plugin.binary(),
        "ipMasq": false,
        "capabilities": {"ips": true},
        "runtimeConfig": {"ips": requested},
        "ipam": {
            "type": "host-local",
            "dataDir": data_dir.display().to_string(),
            "ranges": sets,
            "routes": routes,
        },
    });
    if *plugin == CniPlugin::Bridge {
        let o = conf.as_object_mut().expect("an object");
        o.insert("bridge".into(), json!(BRIDGE));
        o.insert("isGateway".into(), json!(true));
        o.insert("hairpinMode".into(), json!(false));
    }
    Ok(conf)
}

/// `netconf` with the ADD result as `prevResult`, for DEL (0.4.0 and
/// later define it; libcni passes the cached result the same way).
pub fn del_netconf(netconf: &Value, result: Option<&Value>) -> Value {
    let mut conf = netconf.clone();
    let old = matches!(
        conf.get("cniVersion").and_then(Value::as_str),
        Some(v) if v.starts_with("0.1") || v.starts_with("0.2") || v.starts_with("0.3")
    );
    if let (Some(r), false, Some(o)) = (result, old, conf.as_object_mut()) {
        o.insert("prevResult".into(), r.clone());
    }
    conf
}

// ------------------------------------------------------- pure: result

/// A plugin's success result (CNI spec 0.3.0 to 1.0.0).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct CniResult {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    #[serde(default)]
    pub interfaces: Vec<ResultInterface>,
    #[serde(default)]
    pub ips: Vec<ResultIp>,
    #[serde(default)]
    pub routes: Vec<ResultRoute>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct ResultInterface {
    pub name: String,
    #[serde(default)]
    pub mac: Option<String>,
    /// The namespace path of an interface inside the container; none for
    /// the host's interfaces.
    #[serde(default)]
    pub sandbox: Option<String>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct ResultIp {
    /// Index into `interfaces`.
    #[serde(default)]
    pub interface: Option<usize>,
    pub address: IpNet,
    #[serde(default)]
    pub gateway: Option<IpAddr>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct ResultRoute {
    pub dst: IpNet,
    #[serde(default)]
    pub gw: Option<IpAddr>,
}

/// A plugin's error result.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct PluginError {
    #[serde(default)]
    pub code: u32,
    #[serde(default)]
    pub msg: String,
    #[serde(default)]
    pub details: String,
}

/// The plugin's reply to `VERSION`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct VersionInfo {
    #[serde(rename = "supportedVersions", default)]
    pub supported: Vec<String>,
}

pub fn parse_result(text: &str) -> std::result::Result<CniResult, String> {
    serde_json::from_str(text).map_err(|e| format!("unreadable result ({e}): {text}"))
}

impl CniResult {
    /// The addresses on the container's interfaces (an address naming no
    /// interface counts as the container's).
    pub fn sandbox_addresses(&self) -> Vec<IpNet> {
        self.ips
            .iter()
            .filter(|ip| match ip.interface {
                Some(i) => self.interfaces.get(i).is_some_and(|x| x.sandbox.is_some()),
                None => true,
            })
            .map(|ip| ip.address)
            .collect()
    }

    /// The pod's host-side interface: the one interface outside the
    /// sandbox that is not `bridge`.
    pub fn host_interface(&self, bridge: Option<&str>) -> std::result::Result<String, String> {
        let host: Vec<&str> = self
            .interfaces
            .iter()
            .filter(|i| i.sandbox.is_none() && Some(i.name.as_str()) != bridge)
            .map(|i| i.name.as_str())
            .collect();
        match host.as_slice() {
            [one] => Ok(one.to_string()),
            _ => Err(format!(
                "expected one host-side interface in the result, found {host:?}"
            )),
        }
    }

    /// Checks that the container got exactly `requested`; returns its
    /// addresses (with prefixes) and the host-side interface.
    pub fn check(
        &self,
        requested: &[IpAddr],
        bridge: Option<&str>,
    ) -> std::result::Result<(Vec<IpNet>, String), String> {
        let got = self.sandbox_addresses();
        let got_ips: BTreeSet<IpAddr> = got.iter().map(IpNet::addr).collect();
        let want: BTreeSet<IpAddr> = requested.iter().copied().collect();
        if got_ips != want || got.len() != want.len() {
            return Err(format!(
                "the result gave {}, not the requested {}",
                list(&got),
                list(requested)
            ));
        }
        Ok((got, self.host_interface(bridge)?))
    }
}

fn list<T: std::fmt::Display>(v: &[T]) -> String {
    if v.is_empty() {
        return "no address".into();
    }
    v.iter().map(T::to_string).collect::<Vec<_>>().join(", ")
}

/// The version to speak: the newest the lab knows that `info` lists.
pub fn choose_version(info: &VersionInfo) -> Option<&'static str> {
    VERSIONS
        .iter()
        .copied()
        .find(|v| info.supported.iter().any(|s| s == v))
}

/// What a failed plugin said: its error result's message, or its raw
/// output.
pub fn failure_message(stdout: &str, stderr: &str) -> String {
    if let Ok(e) = serde_json::from_str::<PluginError>(stdout) {
        if !e.msg.is_empty() {
            let mut m = e.msg;
            if !e.details.is_empty() {
                m += &format!(" ({})", e.details);
            }
            return m;
        }
    }
    let out = format!("{} {}", stdout.trim(), stderr.trim());
    let out = out.trim();
    if out.is_empty() {
        "no output".into()
    } else {
        out.to_string()
    }
}

// ------------------------------------------------------------- effects

/// One plugin invocation for one pod.
struct Call<'a> {
    bin_dir: &'a Path,
    plugin: &'a CniPlugin,
    node_netns: &'a str,
    pod: &'a PodState,
    cni: &'a PodCni,
}

impl Call<'_> {
    /// Runs `command` with `conf`; the plugin's stdout, or what it said.
    fn run(&self, command: &str, conf: &Value) -> std::result::Result<String, String> {
        let bin = self.bin_dir.join(self.plugin.binary());
        let mut c = Command::new("ip");
        c.args(["netns", "exec", self.node_netns])
            .arg(&bin)
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", &self.cni.container_id)
            .env("CNI_NETNS", format!("/run/netns/{}", self.pod.netns))
            .env("CNI_IFNAME", IFNAME)
            .env("CNI_PATH", self.bin_dir)
            .env("CNI_ARGS", &self.cni.args);
        let out = crate::run_output(&mut c, Some(&conf.to_string()))
            .map_err(|e| format!("running {}: {e}", bin.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(stdout)
        } else {
            Err(failure_message(
                &stdout,
                &String::from_utf8_lossy(&out.stderr),
            ))
        }
    }
}

/// Asks the plugin which versions it speaks and picks one.
fn negotiate(cni: &Cni) -> Result<&'static str> {
    let bin = cni.bin_dir.join(cni.plugin.binary());
    let hint = "install the CNI plugins (Debian package containernetworking-plugins) \
                or give their directory";
    let mut c = Command::new(&bin);
    c.env("CNI_COMMAND", "VERSION");
    let out = crate::run_output(&mut c, Some(r#"{"cniVersion":"0.3.1"}"#))
        .map_err(|e| Error::Msg(format!("CNI plugin {}: {e}; {hint}", bin.display())))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(Error::Msg(format!(
            "CNI plugin {} VERSION failed: {}",
            bin.display(),
            failure_message(&stdout, &String::from_utf8_lossy(&out.stderr))
        )));
    }
    let info: VersionInfo = serde_json::from_str(&stdout).map_err(|e| {
        Error::Msg(format!(
            "CNI plugin {} VERSION: unreadable reply ({e}): {stdout}",
            bin.display()
        ))
    })?;
    choose_version(&info).ok_or_else(|| {
        Error::Msg(format!(
            "CNI plugin {} speaks {:?}, none of {VERSIONS:?}",
            bin.display(),
            info.supported
        ))
    })
}

/// Bridge mode's node settings before any pod: bridged IPv4 and IPv6 go
/// through the `inet` hooks.
fn bridge_nf(node_netns: &str) -> Result<()> {
    crate::in_netns(node_netns, || {
        if !Path::new("/proc/sys/net/bridge").exists() {
            return Err(std::io::Error::other(
                "no net.bridge sysctls: bridge mode needs the br_netfilter module \
                 (modprobe br_netfilter)",
            ));
        }
        crate::sys::write_sysctls(&[
            ("net.bridge.bridge-nf-call-iptables", "1"),
            ("net.bridge.bridge-nf-call-ip6tables", "1"),
        ])
    })
}

/// Bridge mode's node settings once `cni0` exists: the node answers ARP and
/// neighbour solicitations on it for the remote pods.
fn bridge_proxy(state: &State, n: usize) -> Result<()> {
    let node = &state.nodes[n].netns;
    let b = BRIDGE;
    crate::in_netns(node, move || {
        crate::sys::write_sysctls(&[
            (&format!("net.ipv4.conf.{b}.proxy_arp"), "1"),
            (&format!("net.ipv4.neigh.{b}.proxy_delay"), "0"),
            (&format!("net.ipv6.conf.{b}.proxy_ndp"), "1"),
            (&format!("net.ipv6.neigh.{b}.proxy_delay"), "0"),
        ])
    })?;
    let lines: String = state
        .pods
        .iter()
        .filter(|p| p.node != n)
        .flat_map(|p| p.ips.iter().filter(|a| a.is_ipv6()))
        .map(|a| format!("neigh add proxy {a} dev {b}\n"))
        .collect();
    if !lines.is_empty() {
        crate::ip_batch(Some(node), &lines)?;
    }
    Ok(())
}

/// Wires every pod of `state` with `cni`, recording what DEL needs first.
pub(crate) fn wire(state: &mut State, cni: &Cni, cluster: &Cluster) -> Result<()> {
    let version = negotiate(cni)?;
    // No gateway may be an address of the cluster.
    let taken: BTreeSet<IpAddr> = cluster
        .pods
        .iter()
        .flat_map(|p| p.ips.iter().copied())
        .chain(
            cluster
                .nodes
                .iter()
                .flat_map(|n| n.addresses.iter().copied()),
        )
        .collect();
    let ipam = ipam_dir(&state.name);
    let mut ranges = Vec::new();
    for (n, node) in state.nodes.iter().enumerate() {
        let mut r = Vec::new();
        for v4 in [true, false] {
            let ips: Vec<IpAddr> = state
                .pods
                .iter()
                .filter(|p| p.node == n)
                .flat_map(|p| p.ips.iter().copied())
                .filter(|a| a.is_ipv4() == v4)
                .collect();
            if !ips.is_empty() {
                r.push(node_range(&ips, &taken).map_err(|e| {
                    Error::Msg(format!(
                        "node {}: {e}",
                        node.node.as_deref().unwrap_or("(none)")
                    ))
                })?);
            }
        }
        ranges.push(r);
    }
    for pod in &mut state.pods {
        let data_dir = ipam.join(format!("n{}", pod.node));
        let netconf = netconf(&cni.plugin, version, &data_dir, &pod.ips, &ranges[pod.node])
            .map_err(|e| Error::Msg(format!("pod {}: {e}", pod.key)))?;
        let (ns, name) = pod.key.split_once('/').unwrap_or(("", &pod.key));
        pod.cni = Some(PodCni {
            container_id: pod.netns.clone(),
            args: format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={name}"),
            netconf,
            result: None,
        });
    }
    std::fs::create_dir_all(&ipam).map_err(io_err(ipam.display().to_string()))?;
    state.save()?;
    if cni.plugin == CniPlugin::Bridge {
        for node in &state.nodes {
            bridge_nf(&node.netns)?;
        }
    }
    for j in 0..state.pods.len() {
        crate::ip_batch(Some(&state.pods[j].netns), "link set lo up\n")?;
        add(state, j, &cni.plugin, &cni.bin_dir)?;
    }
    if cni.plugin == CniPlugin::Bridge {
        for n in 0..state.nodes.len() {
            bridge_proxy(state, n)?;
        }
    }
    Ok(())
}

/// ADD for pod `j`, whose network configuration the state holds; the
/// result must give exactly its addresses, and is recorded.
pub(crate) fn add(state: &mut State, j: usize, plugin: &CniPlugin, bin_dir: &Path) -> Result<()> {
    let bridge = (*plugin == CniPlugin::Bridge).then_some(BRIDGE);
    let pod = &state.pods[j];
    let pc = pod
        .cni
        .as_ref()
        .ok_or_else(|| Error::Msg(format!("pod {} is not wired by CNI", pod.key)))?;
    let call = Call {
        bin_dir,
        plugin,
        node_netns: &state.nodes[pod.node].netns,
        pod,
        cni: pc,
    };
    let fail = |e: String| {
        Error::Msg(format!(
            "pod {}: CNI {} ADD failed: {e}",
            pod.key,
            plugin.binary()
        ))
    };
    let out = call.run("ADD", &pc.netconf).map_err(fail)?;
    let raw: Value =
        serde_json::from_str(&out).map_err(|e| fail(format!("unreadable result ({e}): {out}")))?;
    let (addresses, host) = parse_result(&out)
        .and_then(|r| r.check(&pod.ips, bridge))
        .map_err(fail)?;
    let pod = &mut state.pods[j];
    pod.addresses = addresses;
    pod.host_interface = Some(host);
    pod.cni.as_mut().expect("checked above").result = Some(raw);
    state.save()
}

/// DEL for pod `j`, as a runtime does when the pod's sandbox goes.
pub(crate) fn del(state: &mut State, j: usize) -> Result<()> {
    let (Some(plugin), Some(bin_dir)) = (&state.cni, &state.cni_bin_dir) else {
        return Err(Error::Msg(format!(
            "lab {} is not wired by CNI",
            state.name
        )));
    };
    let pod = &state.pods[j];
    let Some(pc) = &pod.cni else {
        return Err(Error::Msg(format!("pod {} is not wired by CNI", pod.key)));
    };
    let call = Call {
        bin_dir,
        plugin,
        node_netns: &state.nodes[pod.node].netns,
        pod,
        cni: pc,
    };
    call.run("DEL", &del_netconf(&pc.netconf, pc.result.as_ref()))
        .map_err(|e| Error::Msg(format!("pod {}: CNI DEL failed: {e}", pod.key)))?;
    let pod = &mut state.pods[j];
    pod.host_interface = None;
    pod.cni.as_mut().expect("checked above").result = None;
    state.save()
}

/// DEL for every pod the state says was (or was about to be) wired; what
/// fails is reported and skipped.
pub(crate) fn unwire(state: &State) {
    let (Some(plugin), Some(bin_dir)) = (&state.cni, &state.cni_bin_dir) else {
        return;
    };
    for pod in &state.pods {
        let Some(pc) = &pod.cni else { continue };
        let Some(node) = state.nodes.get(pod.node) else {
            continue;
        };
        let call = Call {
            bin_dir,
            plugin,
            node_netns: &node.netns,
            pod,
            cni: pc,
        };
        if let Err(e) = call.run("DEL", &del_netconf(&pc.netconf, pc.result.as_ref())) {
            eprintln!(
                "lab {}: pod {}: CNI {} DEL failed: {e}",
                state.name,
                pod.key,
                plugin.binary()
            );
        }
    }
}

/// Removes the IPAM directory of lab `name`, reporting leases DEL left.
pub(crate) fn remove_ipam(name: &str) -> Result<()> {
    let dir = ipam_dir(name);
    if !dir.exists() {
        return Ok(());
    }
    let left = leases(&dir);
    if !left.is_empty() {
        eprintln!("lab {name}: host-local leases left after DEL: {left:?}");
    }
    std::fs::remove_dir_all(&dir).map_err(io_err(dir.display().to_string()))
}

/// The addresses `host-local` holds leases for under `dir` (its lease
/// files are named by the address).
pub fn leases(dir: &Path) -> Vec<IpAddr> {
    fn walk(d: &Path, out: &mut Vec<IpAddr>) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if let Some(ip) = p
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse().ok())
            {
                out.push(ip);
            }
        }
    }
    let mut v = Vec::new();
    walk(dir, &mut v);
    v.sort();
    v
}
