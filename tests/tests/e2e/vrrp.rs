//! VRRP interop and failover against a real keepalived (Debian's package),
//! in network namespaces on one bridge (root only; CI runs them). Host 0
//! and 1 are the routers, host 2 the observer (`vrrp-watch`, which also
//! acts as the client for ARP checks).
//!
//! Timing tolerance ε = 25 ms around RFC 5798's formulas; every timing
//! check repeats 3 times at 1 s adverts and 5 times at 100 ms.

use std::time::Duration;

use rondo_tests::vrrp_lab::{self, Lab, Speaker, Watch, skew, t, t_down};

const EPS: f64 = 0.025;

fn lab_or_skip(hosts: usize) -> Option<Lab> {
    if !Lab::available() {
        eprintln!("SKIPPED: VRRP lab tests need root (CI runs them as root)");
        return None;
    }
    Some(Lab::new(hosts).expect("lab"))
}

/// How long a backup is watched under a foreign master (60 s; shorter
/// only when iterating locally with `RONDO_VRRP_SOAK_SECS`).
fn soak() -> f64 {
    std::env::var("RONDO_VRRP_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60.0)
}

fn trials(advert_ms: u32) -> usize {
    if advert_ms >= 1000 { 3 } else { 5 }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// keepalived's unicast block, for host `me` talking to `peer`.
fn ka_unicast(lab: &Lab, me: usize, peer: usize) -> String {
    format!(
        "    unicast_src_ip {}\n    unicast_peer {{\n        {}\n    }}",
        lab.addr(me),
        lab.addr(peer)
    )
}

fn ours_args(priority: u8, advert_ms: u32, unicast_peer: Option<String>) -> Vec<String> {
    let mut a = vec![
        "--priority".to_owned(),
        priority.to_string(),
        "--advert-ms".to_owned(),
        advert_ms.to_string(),
    ];
    if let Some(p) = unicast_peer {
        a.push("--unicast-peer".into());
        a.push(p);
    }
    a
}

fn start_ours(lab: &Lab, host: usize, args: &[String]) -> Speaker {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    lab.ours(host, &args).expect("start our router")
}

/// Observes for `secs` that `host` never holds the VIP, polling the
/// interface; returns how many polls were made.
fn never_holds_vip(lab: &Lab, host: usize, secs_: f64) -> usize {
    let end = vrrp_lab::now() + secs_;
    let mut polls = 0;
    while vrrp_lab::now() < end {
        assert!(!lab.holds_vip(host), "host {host} took the VIP");
        polls += 1;
        vrrp_lab::pause(Duration::from_millis(50));
    }
    polls
}

fn wait_holds(lab: &Lab, host: usize, timeout: f64) -> f64 {
    let end = vrrp_lab::now() + timeout;
    loop {
        if lab.holds_vip(host) {
            return vrrp_lab::now();
        }
        assert!(
            vrrp_lab::now() < end,
            "host {host} did not take the VIP within {timeout} s"
        );
        vrrp_lab::pause(Duration::from_millis(2));
    }
}

fn wait_released(lab: &Lab, host: usize, timeout: f64) -> f64 {
    let end = vrrp_lab::now() + timeout;
    loop {
        if !lab.holds_vip(host) {
            return vrrp_lab::now();
        }
        assert!(
            vrrp_lab::now() < end,
            "host {host} kept the VIP for {timeout} s"
        );
        vrrp_lab::pause(Duration::from_millis(2));
    }
}

/// The first gratuitous ARP for the VIP from `mac` after `after`.
fn garp_from(watch: &mut Watch, lab: &Lab, mac: &str, after: f64, timeout: f64) -> f64 {
    let vip = lab.vip.to_string();
    let mac = mac.to_owned();
    let v = watch
        .lines
        .wait("a gratuitous ARP", secs(timeout), |v| {
            v["kind"] == "arp"
                && v["sha"] == mac.as_str()
                && v["spa"] == vip.as_str()
                && t(v) > after
        })
        .expect("gratuitous ARP");
    t(&v)
}

/// The last advert from `src` seen before `before`.
fn last_advert(watch: &mut Watch, src: std::net::Ipv4Addr, before: f64) -> f64 {
    watch
        .adverts_from(src)
        .into_iter()
        .filter(|&x| x <= before)
        .fold(0.0, f64::max)
}

fn assert_near(what: &str, got: f64, want: f64) {
    assert!(
        (got - want).abs() <= EPS,
        "{what}: {:.1} ms, expected {:.1} ms ± {:.0} ms",
        got * 1000.0,
        want * 1000.0,
        EPS * 1000.0
    );
}

/// Our router as backup under a keepalived master: 60 s without taking
/// the VIP or drawing a complaint, then kill -9 and SIGTERM trials.
fn keepalived_master_ours_backup(advert_ms: u32, unicast: bool) {
    let Some(lab) = lab_or_skip(3) else { return };
    let (ka_extra, peer) = if unicast {
        (ka_unicast(&lab, 0, 1), Some(lab.addr(0).to_string()))
    } else {
        (String::new(), None)
    };
    let mut watch = lab.watch(2).unwrap();
    let mut ka = lab.keepalived(0, 150, advert_ms, &ka_extra).unwrap();
    wait_holds(&lab, 0, 10.0);
    let mut ours = start_ours(&lab, 1, &ours_args(100, advert_ms, peer));
    ours.wait_state("Backup", secs(5.0)).unwrap();

    // 60 s under a keepalived master: never master, never the VIP, no
    // advert of ours on the wire, no complaint from keepalived.
    never_holds_vip(&lab, 1, soak());
    assert!(!ours.ever("Master"));
    assert!(
        watch.adverts_from(lab.addr(1)).is_empty(),
        "we advertised as backup"
    );
    assert!(
        ka.complaints().is_empty(),
        "keepalived complained: {:?}",
        ka.complaints()
    );
    let a_adverts = watch.adverts_from(lab.addr(0)).len();
    let expected = (soak() * 1000.0) as usize / advert_ms as usize;
    assert!(
        a_adverts + 3 >= expected,
        "{a_adverts} adverts from keepalived in 60 s"
    );

    for trial in 0..trials(advert_ms) {
        // kill -9 right after an advert: we hold the VIP
        // Master_Down_Interval after its last advert.
        watch.wait_advert(lab.addr(0), secs(5.0)).unwrap();
        ka.crash();
        let up = t(&ours.wait_state("Master", secs(10.0)).unwrap());
        let last = last_advert(&mut watch, lab.addr(0), up);
        assert_near(
            &format!("trial {trial}: takeover after kill -9"),
            up - last,
            t_down(100, advert_ms),
        );
        assert!(lab.holds_vip(1));
        // keepalived leaves its VIP behind when killed; a dead host would
        // lose it.
        lab.remove_vip(0);

        // keepalived restarts and preempts us.
        ka = lab.keepalived(0, 150, advert_ms, &ka_extra).unwrap();
        if let Err(e) = ours.wait_state("Backup", secs(10.0)) {
            panic!(
                "{e}: keepalived log:\n{}\nours: {:?}",
                ka.log(),
                ours.lines.drain()
            );
        }
        wait_released(&lab, 1, 1.0);
        wait_holds(&lab, 0, 2.0);

        // SIGTERM: keepalived resigns with priority 0; we take over after
        // our skew time.
        let before = vrrp_lab::now();
        ka.terminate();
        let up = t(&ours.wait_state("Master", secs(10.0)).unwrap());
        let resign = watch
            .lines
            .drain()
            .iter()
            .filter(|v| v["kind"] == "advert" && v["priority"] == 0 && t(v) >= before)
            .map(t)
            .next()
            .expect("a priority-0 advert");
        assert_near(
            &format!("trial {trial}: takeover after SIGTERM"),
            up - resign,
            skew(100, advert_ms),
        );
        ka = lab.keepalived(0, 150, advert_ms, &ka_extra).unwrap();
        ours.wait_state("Backup", secs(10.0)).unwrap();
    }
    assert!(
        ka.complaints().is_empty(),
        "keepalived complained: {:?}",
        ka.complaints()
    );
    let c = ours.terminate().unwrap();
    assert_eq!(c["bad_checksum"], 0, "{c}");
    assert_eq!(c["wrong_ttl"], 0, "{c}");
    assert_eq!(
        c["message_only_checksum"], 0,
        "keepalived sends the pseudo-header form: {c}"
    );
    assert!(c["pseudo_header_checksum"].as_u64() > Some(0), "{c}");
}

/// keepalived as backup under our master: 60 s of silence from it, then
/// kill -9 and SIGTERM trials, where keepalived's own timers take over.
fn ours_master_keepalived_backup(advert_ms: u32, unicast: bool) {
    let Some(lab) = lab_or_skip(3) else { return };
    let (ka_extra, peer) = if unicast {
        (ka_unicast(&lab, 1, 0), Some(lab.addr(1).to_string()))
    } else {
        (String::new(), None)
    };
    let args = ours_args(150, advert_ms, peer);
    let mut watch = lab.watch(2).unwrap();
    let mut ours = start_ours(&lab, 0, &args);
    ours.wait_state("Master", secs(10.0)).unwrap();
    let mut ka = lab.keepalived(1, 100, advert_ms, &ka_extra).unwrap();
    let b_mac = lab.mac(1);

    never_holds_vip(&lab, 1, soak());
    assert!(
        watch.adverts_from(lab.addr(1)).is_empty(),
        "keepalived advertised as backup"
    );
    assert!(
        ka.complaints().is_empty(),
        "keepalived complained: {:?}",
        ka.complaints()
    );

    for trial in 0..trials(advert_ms) {
        watch.wait_advert(lab.addr(0), secs(5.0)).unwrap();
        let killed = vrrp_lab::now();
        ours.crash();
        let up = garp_from(&mut watch, &lab, &b_mac, killed, 10.0);
        let last = last_advert(&mut watch, lab.addr(0), up);
        // keepalived's own timer, fed by our adverts (it sends its
        // gratuitous ARP a few ms after taking the address).
        let took = up - last;
        assert!(
            (took - t_down(100, advert_ms)).abs() <= EPS,
            "trial {trial}: keepalived took over {:.1} ms after our last advert",
            took * 1000.0
        );
        // Our restart: the stale VIP left by kill -9 goes at once, then we
        // preempt keepalived.
        assert!(lab.holds_vip(0), "kill -9 leaves the address behind");
        ours = start_ours(&lab, 0, &args);
        wait_released(&lab, 0, 0.1 + 0.5);
        ours.wait_state("Master", secs(10.0)).unwrap();
        wait_released(&lab, 1, 1.0);

        // SIGTERM: we resign with priority 0; keepalived takes over after
        // its skew.
        ours.terminate().unwrap();
        let resign = watch
            .lines
            .drain()
            .iter()
            .rev()
            .find(|v| v["kind"] == "advert" && v["priority"] == 0)
            .map(t)
            .expect("a priority-0 advert from us");
        let up = garp_from(&mut watch, &lab, &b_mac, resign, 10.0);
        assert!(
            (up - resign - skew(100, advert_ms)).abs() <= EPS,
            "trial {trial}: keepalived took over {:.1} ms after our priority 0",
            (up - resign) * 1000.0
        );
        ours = start_ours(&lab, 0, &args);
        ours.wait_state("Master", secs(10.0)).unwrap();
        wait_released(&lab, 1, 1.0);
    }
    assert!(
        ka.complaints().is_empty(),
        "keepalived complained: {:?}",
        ka.complaints()
    );
    ka.terminate();
}

#[test]
fn interop_ours_backup_keepalived_master_1s_multicast() {
    keepalived_master_ours_backup(1000, false);
}

#[test]
fn interop_ours_backup_keepalived_master_100ms_multicast() {
    keepalived_master_ours_backup(100, false);
}

#[test]
fn interop_ours_backup_keepalived_master_1s_unicast() {
    keepalived_master_ours_backup(1000, true);
}

#[test]
fn interop_ours_backup_keepalived_master_100ms_unicast() {
    keepalived_master_ours_backup(100, true);
}

#[test]
fn interop_ours_master_keepalived_backup_1s_multicast() {
    ours_master_keepalived_backup(1000, false);
}

#[test]
fn interop_ours_master_keepalived_backup_100ms_multicast() {
    ours_master_keepalived_backup(100, false);
}

#[test]
fn interop_ours_master_keepalived_backup_1s_unicast() {
    ours_master_keepalived_backup(1000, true);
}

#[test]
fn interop_ours_master_keepalived_backup_100ms_unicast() {
    ours_master_keepalived_backup(100, true);
}
