//! The VRRP lab (root only): hosts in network namespaces on one bridge
//! (see [`crate::netns::Net`]), each able to run our router
//! (`vrrp-speaker`, or a `rondo-gateway` with `--vrrp-*`), a real
//! keepalived, or the passive observer `vrrp-watch`. Every process writes
//! JSON lines with wall-clock timestamps, so a test lines up "last advert
//! seen on the wire" with "address configured" across processes.
//!
//! The tests are synchronous: everything they drive is another process.

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::Signal;
use serde_json::Value;

use crate::netns::Net;
use crate::{Proc, bin};

/// RFC 5798 Master_Down_Interval in seconds for priority `p` and advert
/// interval `advert_ms`.
pub fn t_down(p: u8, advert_ms: u32) -> f64 {
    3.0 * f64::from(advert_ms) / 1000.0 + skew(p, advert_ms)
}

/// RFC 5798 Skew_Time in seconds (on the centisecond wire interval).
pub fn skew(p: u8, advert_ms: u32) -> f64 {
    f64::from(256 - u32::from(p)) * f64::from(advert_ms) / 1000.0 / 256.0
}

/// The pause between two polls of a condition in the synchronous lab code
/// (which drives other processes and has no async runtime).
#[allow(clippy::disallowed_methods)]
pub fn pause(d: Duration) {
    std::thread::sleep(d);
}

/// Polls `cond` every 2 ms for up to `timeout` seconds.
pub fn wait_until(what: &str, timeout: f64, mut cond: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs_f64(timeout);
    while !cond() {
        if Instant::now() > deadline {
            bail!("timed out after {timeout} s waiting for {what}");
        }
        pause(Duration::from_millis(2));
    }
    Ok(())
}

/// The wall clock as the lab's processes print it.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// JSON lines from a child's stdout, all kept for later analysis.
pub struct Lines {
    rx: mpsc::Receiver<Value>,
    /// Every line received so far.
    pub seen: Vec<Value>,
}

impl Lines {
    fn new(stdout: impl std::io::Read + Send + 'static) -> Lines {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && tx.send(v).is_err()
                {
                    break;
                }
            }
        });
        Lines {
            rx,
            seen: Vec::new(),
        }
    }

    /// Takes in everything received so far.
    pub fn drain(&mut self) -> &[Value] {
        while let Ok(v) = self.rx.try_recv() {
            self.seen.push(v);
        }
        &self.seen
    }

    /// Waits for the next line (after those already seen) that satisfies
    /// `pred`.
    pub fn wait(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(v) => {
                    self.seen.push(v.clone());
                    if pred(&v) {
                        return Ok(v);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    bail!("timed out after {timeout:?} waiting for {what}")
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    bail!("process ended while waiting for {what}")
                }
            }
        }
    }
}

/// The `t` field of a line.
pub fn t(v: &Value) -> f64 {
    v["t"].as_f64().unwrap_or_default()
}

/// Our router in a lab host.
pub struct Speaker {
    pub proc: Proc,
    pub lines: Lines,
    pub addr: Ipv4Addr,
}

impl Speaker {
    /// Waits for the router to enter `state`; returns the line.
    pub fn wait_state(&mut self, state: &str, timeout: Duration) -> anyhow::Result<Value> {
        self.lines
            .wait(&format!("{} to become {state}", self.addr), timeout, |v| {
                v["event"] == "state" && v["state"] == state
            })
    }

    /// The current state as last reported.
    pub fn state(&mut self) -> String {
        self.lines
            .drain()
            .iter()
            .rev()
            .find(|v| v["event"] == "state")
            .and_then(|v| v["state"].as_str())
            .unwrap_or("Initialize")
            .to_owned()
    }

    /// Whether it ever reported `state` among the lines seen so far.
    pub fn ever(&mut self, state: &str) -> bool {
        self.lines
            .drain()
            .iter()
            .any(|v| v["event"] == "state" && v["state"] == state)
    }

    /// SIGTERM (graceful: priority 0) and the final counters.
    pub fn terminate(&mut self) -> anyhow::Result<Value> {
        self.proc.signal(Signal::SIGTERM);
        let v = self
            .lines
            .wait("counters at exit", Duration::from_secs(10), |v| {
                v["event"] == "stopped"
            })?;
        self.proc.wait_exit(Duration::from_secs(5));
        Ok(v["counters"].clone())
    }

    /// SIGKILL: the host died.
    pub fn crash(&mut self) {
        self.proc.kill();
    }
}

/// A keepalived in a lab host: the parent and its VRRP child.
#[derive(Debug)]
pub struct Keepalived {
    parent: Proc,
    child: i32,
    pub log: PathBuf,
    pub addr: Ipv4Addr,
}

impl Keepalived {
    /// Host death: stop both processes, then kill them (keepalived's
    /// parent would respawn the child, and the child resigns gracefully if
    /// the parent dies first).
    pub fn crash(&mut self) {
        let child = nix::unistd::Pid::from_raw(self.child);
        let _ = nix::sys::signal::kill(child, Signal::SIGSTOP);
        self.parent.signal(Signal::SIGSTOP);
        let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
        self.parent.kill();
    }

    /// Graceful stop (the master sends priority 0).
    pub fn terminate(&mut self) {
        self.parent.signal(Signal::SIGTERM);
        self.parent.wait_exit(Duration::from_secs(10));
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Log lines in which keepalived complains about what it received.
    pub fn complaints(&self) -> Vec<String> {
        complaints(&self.log())
    }
}

/// The lines of a keepalived log that complain about received adverts
/// (checksum, TTL, version, interval, address list, authentication). A
/// backup "discarding" a lower-priority advert is the protocol working.
pub fn complaints(log: &str) -> Vec<String> {
    const WORDS: [&str; 9] = [
        "invalid",
        "checksum",
        "ttl",
        "version",
        "interval",
        "mismatch",
        "bogus",
        "wrong",
        "malformed",
    ];
    log.lines()
        .filter(|l| {
            let l = l.to_lowercase();
            WORDS.iter().any(|w| l.contains(w))
                // Its own startup banner and config echo are not complaints.
                && !l.contains("command line")
                && !l.contains("starting keepalived")
        })
        .map(str::to_owned)
        .collect()
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child), Signal::SIGKILL);
    }
}

/// The passive observer on a lab host.
pub struct Watch {
    _proc: Proc,
    pub lines: Lines,
}

impl Watch {
    /// Times of the adverts from `src` seen so far.
    pub fn adverts_from(&mut self, src: Ipv4Addr) -> Vec<f64> {
        let src = src.to_string();
        self.lines
            .drain()
            .iter()
            .filter(|v| v["kind"] == "advert" && v["src"] == src.as_str())
            .map(t)
            .collect()
    }

    /// Adverts (source, priority, time) seen in `[from, to]`.
    pub fn adverts_between(&mut self, from: f64, to: f64) -> Vec<(String, u64, f64)> {
        self.lines
            .drain()
            .iter()
            .filter(|v| v["kind"] == "advert" && t(v) >= from && t(v) <= to)
            .map(|v| {
                (
                    v["src"].as_str().unwrap_or_default().to_owned(),
                    v["priority"].as_u64().unwrap_or_default(),
                    t(v),
                )
            })
            .collect()
    }

    /// The first advert from `src` seen after `after` (already received or
    /// still to come); its time.
    pub fn first_advert_after(
        &mut self,
        src: Ipv4Addr,
        after: f64,
        timeout: Duration,
    ) -> anyhow::Result<f64> {
        let s = src.to_string();
        let is = |v: &Value| v["kind"] == "advert" && v["src"] == s.as_str() && t(v) > after;
        if let Some(v) = self.lines.drain().iter().find(|v| is(v)) {
            return Ok(t(v));
        }
        self.lines
            .wait(&format!("an advert from {src}"), timeout, is)
            .map(|v| t(&v))
    }

    /// Waits for an advert from `src` sent after this call.
    pub fn wait_advert(&mut self, src: Ipv4Addr, timeout: Duration) -> anyhow::Result<Value> {
        let s = src.to_string();
        let after = now();
        self.lines
            .wait(&format!("an advert from {src}"), timeout, |v| {
                v["kind"] == "advert" && v["src"] == s.as_str() && t(v) > after
            })
    }
}

/// Hosts on one bridge with a virtual address .100 in their subnet.
pub struct Lab {
    pub net: Net,
    pub vip: Ipv4Addr,
    dir: tempfile::TempDir,
}

impl Lab {
    /// Whether the lab can run here (root; keepalived is checked when
    /// started, and its absence fails the test).
    pub fn available() -> bool {
        Net::available()
    }

    pub fn new(hosts: usize) -> anyhow::Result<Lab> {
        let net = Net::new(hosts)?;
        net.flood()?;
        for ns in &net.namespaces {
            let _ = Command::new("ip")
                .args(["netns", "exec", ns, "sysctl", "-qw"])
                .args([
                    "net.ipv6.conf.all.disable_ipv6=1",
                    "net.ipv6.conf.default.disable_ipv6=1",
                ])
                .status();
        }
        let [a, b, c, _] = net.addrs[0].octets();
        Ok(Lab {
            net,
            vip: Ipv4Addr::new(a, b, c, 100),
            dir: tempfile::tempdir()?,
        })
    }

    pub fn addr(&self, i: usize) -> Ipv4Addr {
        self.net.addrs[i]
    }

    pub fn iface(&self, i: usize) -> String {
        self.net.iface(i)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn ns(&self, i: usize) -> &str {
        &self.net.namespaces[i]
    }

    /// Starts `vrrp-speaker` in host `i` with the lab's interface and VIP,
    /// VRID 51, and `args` (`--priority`, `--advert-ms`, …).
    pub fn ours(&self, i: usize, args: &[&str]) -> anyhow::Result<Speaker> {
        let log = self.dir().join(format!("ours-{i}.log"));
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.ns(i)])
            .arg(bin("vrrp-speaker"))
            .args(["--interface", &self.iface(i)])
            .args(["--vip", &format!("{}/24", self.vip)])
            .args(args);
        let (proc, lines) = spawn_lines(cmd, &log)?;
        let mut s = Speaker {
            proc,
            lines,
            addr: self.addr(i),
        };
        s.lines
            .wait("router started", Duration::from_secs(10), |v| {
                v["event"] == "started"
            })?;
        Ok(s)
    }

    /// Starts keepalived in host `i` (state BACKUP, VRID 51, VRRPv3 unless
    /// `extra` says otherwise) and waits for its VRRP child.
    pub fn keepalived(
        &self,
        i: usize,
        priority: u8,
        advert_ms: u32,
        extra: &str,
    ) -> anyhow::Result<Keepalived> {
        start_keepalived(
            self.ns(i),
            &self.iface(i),
            self.addr(i),
            self.dir(),
            &KeepalivedConfig {
                priority,
                advert_ms,
                vip: self.vip,
                extra,
            },
        )
    }

    /// Starts the observer in host `i`.
    pub fn watch(&self, i: usize) -> anyhow::Result<Watch> {
        let log = self.dir().join(format!("watch-{i}.log"));
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.ns(i)])
            .arg(bin("vrrp-watch"))
            .arg(self.iface(i));
        let (proc, mut lines) = spawn_lines(cmd, &log)?;
        lines.wait("observer ready", Duration::from_secs(10), |v| {
            v["kind"] == "ready"
        })?;
        Ok(Watch { _proc: proc, lines })
    }

    /// Whether host `i` has the virtual address configured.
    pub fn holds_vip(&self, i: usize) -> bool {
        let out = Command::new("ip")
            .args([
                "-n",
                self.ns(i),
                "-4",
                "-o",
                "addr",
                "show",
                "dev",
                &self.iface(i),
            ])
            .output();
        out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&format!(" {}/", self.vip)))
    }

    /// Configures the virtual address on host `i` by hand (a stale one).
    pub fn add_vip(&self, i: usize) -> anyhow::Result<()> {
        ip(&[
            "-n",
            self.ns(i),
            "addr",
            "add",
            &format!("{}/24", self.vip),
            "dev",
            &self.iface(i),
        ])
    }

    /// Removes it (what a dead host's reboot does).
    pub fn remove_vip(&self, i: usize) {
        let _ = ip(&[
            "-n",
            self.ns(i),
            "addr",
            "del",
            &format!("{}/24", self.vip),
            "dev",
            &self.iface(i),
        ]);
    }

    /// Host `i`'s MAC address.
    pub fn mac(&self, i: usize) -> String {
        let out = Command::new("ip")
            .args([
                "-n",
                self.ns(i),
                "-o",
                "link",
                "show",
                "dev",
                &self.iface(i),
            ])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        out.split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .unwrap_or_default()
            .to_owned()
    }

    /// The MAC that host `i`'s ARP cache holds for the virtual address.
    pub fn arp_entry(&self, i: usize) -> Option<String> {
        let out = Command::new("ip")
            .args([
                "-n",
                self.ns(i),
                "neigh",
                "show",
                &self.vip.to_string(),
                "dev",
                &self.iface(i),
            ])
            .output()
            .ok()?;
        let s = String::from_utf8_lossy(&out.stdout).into_owned();
        s.split_whitespace()
            .skip_while(|w| *w != "lladdr")
            .nth(1)
            .map(str::to_owned)
    }

    /// Gives host `i` a cached (stale) ARP entry for the virtual address
    /// pointing at `mac`, as a client that talked to that master has.
    pub fn cache_arp(&self, i: usize, mac: &str) -> anyhow::Result<()> {
        ip(&[
            "-n",
            self.ns(i),
            "neigh",
            "replace",
            &self.vip.to_string(),
            "lladdr",
            mac,
            "nud",
            "stale",
            "dev",
            &self.iface(i),
        ])
    }
}

/// What a test keepalived is told.
pub struct KeepalivedConfig<'a> {
    pub priority: u8,
    pub advert_ms: u32,
    pub vip: Ipv4Addr,
    /// Extra lines for the `vrrp_instance` block.
    pub extra: &'a str,
}

/// Starts keepalived in namespace `ns` on `iface` (state BACKUP, VRID 51,
/// VRRPv3 unless `extra` says `version 2`) and waits for its VRRP child.
pub fn start_keepalived(
    ns: &str,
    iface: &str,
    addr: Ipv4Addr,
    dir: &Path,
    cfg: &KeepalivedConfig<'_>,
) -> anyhow::Result<Keepalived> {
    static STARTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let k = dir.join(format!("keepalived-{ns}-{n}"));
    let conf = k.with_extension("conf");
    let version = if cfg.extra.contains("version 2") {
        ""
    } else {
        "    version 3\n"
    };
    std::fs::write(
        &conf,
        format!(
            "global_defs {{\n    router_id {ns}\n}}\n\
             vrrp_instance VI_1 {{\n    state BACKUP\n    interface {iface}\n    \
             virtual_router_id 51\n    priority {priority}\n    advert_int {adv}\n{version}\
             {extra}\n    virtual_ipaddress {{\n        {vip}/24 dev {iface}\n    }}\n}}\n",
            priority = cfg.priority,
            extra = cfg.extra,
            adv = f64::from(cfg.advert_ms) / 1000.0,
            vip = cfg.vip,
        ),
    )?;
    let log = k.with_extension("log");
    let pid = k.with_extension("pid");
    let vrrp_pid = k.with_extension("vrrp.pid");
    let out = std::fs::File::create(&log)?;
    let child = Command::new("ip")
        .args(["netns", "exec", ns, "keepalived"])
        .args(["-n", "-l", "-D", "-f"])
        .arg(&conf)
        .arg("-p")
        .arg(&pid)
        .arg("-r")
        .arg(&vrrp_pid)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .context("spawn keepalived (apt-get install keepalived)")?;
    let mut parent = Proc::from_child(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    let child = loop {
        if let Some(p) = std::fs::read_to_string(&vrrp_pid)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            break p;
        }
        if !parent.running() || Instant::now() > deadline {
            bail!(
                "keepalived did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        pause(Duration::from_millis(10));
    };
    Ok(Keepalived {
        parent,
        child,
        log,
        addr,
    })
}

/// The MAC address of `iface` in namespace `ns`.
pub fn mac_of(ns: &str, iface: &str) -> String {
    let out = Command::new("ip")
        .args(["-n", ns, "-o", "link", "show", "dev", iface])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap_or_default()
        .to_owned()
}

/// Starts the observer on `iface` of the current (root) namespace.
pub fn watch_iface(iface: &str, log: &Path) -> anyhow::Result<Watch> {
    let mut cmd = Command::new(bin("vrrp-watch"));
    cmd.arg(iface);
    watch_with(cmd, log)
}

/// `vrrp-watch` as `cmd` runs it (e.g. through `nsenter`, in a
/// container's network namespace).
pub fn watch_with(cmd: Command, log: &Path) -> anyhow::Result<Watch> {
    let (proc, mut lines) = spawn_lines(cmd, log)?;
    lines.wait("observer ready", Duration::from_secs(10), |v| {
        v["kind"] == "ready"
    })?;
    Ok(Watch { _proc: proc, lines })
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip").args(args).output()?;
    if !out.status.success() {
        bail!(
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Spawns `cmd` with stdout read as JSON lines and stderr to `log`.
pub fn spawn_lines(mut cmd: Command, log: &Path) -> anyhow::Result<(Proc, Lines)> {
    let err = std::fs::File::create(log)?;
    let mut child = cmd
        .env("RONDO_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(err)
        .spawn()
        .with_context(|| format!("spawn {cmd:?}"))?;
    let stdout = child.stdout.take().context("stdout")?;
    Ok((Proc::from_child(child), Lines::new(stdout)))
}
