//! Network namespaces for fault tests (root only): every storage node gets
//! its own namespace with one address on a bridge that lives in a hub
//! namespace; the test process and the gateway stay in the root namespace
//! and reach the bridge through one veth pair. Faults are nftables rules
//! inside a node's namespace (the kernel here has no netem): a partition
//! drops traffic to and from chosen peers, one-way loss drops one
//! direction, random loss drops a share of packets. Everything is removed
//! on drop.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, bail};

static NEXT: AtomicU32 = AtomicU32::new(0);

fn run(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("run {args:?}"))?;
    if !out.status.success() {
        bail!("{args:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// A private network of `n` node namespaces.
#[derive(Debug)]
pub struct Net {
    tag: String,
    hub: String,
    root_if: String,
    /// Namespace of each node.
    pub namespaces: Vec<String>,
    /// Address of each node.
    pub addrs: Vec<Ipv4Addr>,
}

impl Net {
    /// Whether this process may create namespaces.
    pub fn available() -> bool {
        nix::unistd::geteuid().is_root()
    }

    /// Creates the hub, the bridge, one namespace per node and the root's
    /// link into the bridge, on a /24 private to this test.
    pub fn new(n: usize) -> anyhow::Result<Net> {
        // A /24 per process and net: 10.<pid high>.<pid low>, shifted by
        // the net's number in this process.
        let k = NEXT.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let tag = format!("r{}x{k}", pid % 100_000);
        let subnet = [
            10u8,
            ((pid >> 8) as u8).wrapping_add((k as u8).wrapping_mul(37)),
            pid as u8,
        ];
        let ip = |host: u8| Ipv4Addr::new(subnet[0], subnet[1], subnet[2], host);
        let hub = format!("{tag}-hub");
        let root_if = format!("{tag}r");
        let mut net = Net {
            tag: tag.clone(),
            hub: hub.clone(),
            root_if: root_if.clone(),
            namespaces: Vec::new(),
            addrs: Vec::new(),
        };
        run(&["ip", "netns", "add", &hub])?;
        run(&["ip", "-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        run(&["ip", "-n", &hub, "link", "set", "br0", "up"])?;
        // The root namespace's way in.
        let peer = format!("{tag}R");
        run(&[
            "ip", "link", "add", &root_if, "type", "veth", "peer", "name", &peer,
        ])?;
        run(&["ip", "link", "set", &peer, "netns", &hub])?;
        run(&[
            "ip", "-n", &hub, "link", "set", &peer, "master", "br0", "up",
        ])?;
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", ip(1)),
            "dev",
            &root_if,
        ])?;
        run(&["ip", "link", "set", &root_if, "up"])?;
        for i in 0..n {
            let ns = format!("{tag}-n{i}");
            run(&["ip", "netns", "add", &ns])?;
            net.namespaces.push(ns.clone());
            let inner = format!("{tag}n{i}");
            let outer = format!("{tag}h{i}");
            run(&[
                "ip", "link", "add", &inner, "type", "veth", "peer", "name", &outer,
            ])?;
            run(&["ip", "link", "set", &inner, "netns", &ns])?;
            run(&["ip", "link", "set", &outer, "netns", &hub])?;
            run(&[
                "ip", "-n", &hub, "link", "set", &outer, "master", "br0", "up",
            ])?;
            let addr = ip(u8::try_from(i + 2)?);
            run(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                &inner,
            ])?;
            run(&["ip", "-n", &ns, "link", "set", &inner, "up"])?;
            run(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
            run(&[
                "ip", "netns", "exec", &ns, "nft", "add", "table", "inet", "rondo",
            ])?;
            for (chain, hook) in [("in", "input"), ("out", "output")] {
                run(&[
                    "ip",
                    "netns",
                    "exec",
                    &ns,
                    "nft",
                    "add",
                    "chain",
                    "inet",
                    "rondo",
                    chain,
                    &format!("{{ type filter hook {hook} priority 0; }}"),
                ])?;
            }
            net.addrs.push(addr);
        }
        Ok(net)
    }

    /// The root namespace's interface on the bridge.
    pub fn root_iface(&self) -> &str {
        &self.root_if
    }

    /// The node's interface inside its namespace.
    pub fn iface(&self, node: usize) -> String {
        format!("{}n{node}", self.tag)
    }

    /// Makes the bridge a hub (no MAC learning), so that an observer sees
    /// unicast frames between other hosts too.
    pub fn flood(&self) -> anyhow::Result<()> {
        run(&[
            "ip",
            "-n",
            &self.hub,
            "link",
            "set",
            "br0",
            "type",
            "bridge",
            "ageing_time",
            "0",
        ])
    }

    /// Pulls node `node`'s cable out of the bridge (its link stays up, as
    /// when a switch port or an uplink fails).
    pub fn detach(&self, node: usize) -> anyhow::Result<()> {
        let port = format!("{}h{node}", self.tag);
        run(&["ip", "-n", &self.hub, "link", "set", &port, "nomaster"])
    }

    /// Plugs it back in.
    pub fn attach(&self, node: usize) -> anyhow::Result<()> {
        let port = format!("{}h{node}", self.tag);
        run(&["ip", "-n", &self.hub, "link", "set", &port, "master", "br0"])
    }

    fn nft(&self, node: usize, rule: &[&str]) -> anyhow::Result<()> {
        let mut args = vec!["ip", "netns", "exec", &self.namespaces[node], "nft"];
        args.extend_from_slice(rule);
        run(&args)
    }

    /// Cuts node `a` off from the nodes `others`, both ways (the root
    /// namespace, where the gateway and the test run, still reaches it).
    pub fn partition(&self, a: usize, others: &[usize]) -> anyhow::Result<()> {
        for &b in others {
            let (ia, ib) = (self.addrs[a].to_string(), self.addrs[b].to_string());
            self.nft(
                a,
                &[
                    "add", "rule", "inet", "rondo", "in", "ip", "saddr", &ib, "drop",
                ],
            )?;
            self.nft(
                a,
                &[
                    "add", "rule", "inet", "rondo", "out", "ip", "daddr", &ib, "drop",
                ],
            )?;
            self.nft(
                b,
                &[
                    "add", "rule", "inet", "rondo", "in", "ip", "saddr", &ia, "drop",
                ],
            )?;
            self.nft(
                b,
                &[
                    "add", "rule", "inet", "rondo", "out", "ip", "daddr", &ia, "drop",
                ],
            )?;
        }
        Ok(())
    }

    /// Drops every packet node `from` sends to node `to` (one direction;
    /// over TCP it breaks both directions of every connection between
    /// them, since acknowledgements are lost too, while both still reach
    /// everyone else: connectivity that is not transitive).
    pub fn block(&self, from: usize, to: usize) -> anyhow::Result<()> {
        let f = self.addrs[from].to_string();
        self.nft(
            to,
            &[
                "add", "rule", "inet", "rondo", "in", "ip", "saddr", &f, "drop",
            ],
        )
    }

    /// Drops `percent` % of the packets every node receives from the other
    /// nodes.
    pub fn loss(&self, percent: u8) -> anyhow::Result<()> {
        let pct = percent.to_string();
        for i in 0..self.addrs.len() {
            for (j, other) in self.addrs.iter().enumerate() {
                if i != j {
                    let o = other.to_string();
                    self.nft(
                        i,
                        &[
                            "add", "rule", "inet", "rondo", "in", "ip", "saddr", &o, "numgen",
                            "random", "mod", "100", "<", &pct, "drop",
                        ],
                    )?;
                }
            }
        }
        Ok(())
    }

    /// Removes every fault.
    pub fn heal(&self) -> anyhow::Result<()> {
        for i in 0..self.addrs.len() {
            for chain in ["in", "out"] {
                self.nft(i, &["flush", "chain", "inet", "rondo", chain])?;
            }
        }
        Ok(())
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = run(&["ip", "link", "del", &self.root_if]);
        for ns in self.namespaces.iter().chain(std::iter::once(&self.hub)) {
            let _ = run(&["ip", "netns", "del", ns]);
        }
        let _ = &self.tag;
    }
}
