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
    let is = |v: &serde_json::Value| {
        v["kind"] == "arp" && v["sha"] == mac.as_str() && v["spa"] == vip.as_str() && t(v) > after
    };
    // Already received, or still to come.
    if let Some(v) = watch.lines.drain().iter().find(|v| is(v)) {
        return t(v);
    }
    let v = watch
        .lines
        .wait("a gratuitous ARP", secs(timeout), is)
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
    // keepalived's timer does not catch up on a late advert: on a loaded
    // 2-core machine each may come a little late, so allow 2 %.
    let expected = (soak() * 1000.0) as usize / advert_ms as usize;
    assert!(
        a_adverts * 100 >= expected * 98,
        "{a_adverts} adverts from keepalived in 60 s, {expected} expected"
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
        // keepalived's own timer, fed by our adverts: its first advert as
        // master (sent before it configures the address and sends
        // gratuitous ARP, so its own netlink work does not count).
        let up = watch
            .first_advert_after(lab.addr(1), killed, secs(10.0))
            .unwrap();
        let last = last_advert(&mut watch, lab.addr(0), up);
        let took = up - last;
        eprintln!(
            "{advert_ms} ms trial {trial}: keepalived master {:.1} ms after our last advert (T_down {:.1})",
            took * 1000.0,
            t_down(100, advert_ms) * 1000.0
        );
        assert!(
            (took - t_down(100, advert_ms)).abs() <= EPS,
            "trial {trial}: keepalived took over {:.1} ms after our last advert",
            took * 1000.0
        );
        garp_from(&mut watch, &lab, &b_mac, killed, 10.0);
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
        let up = watch
            .first_advert_after(lab.addr(1), resign, secs(10.0))
            .unwrap();
        assert!(
            (up - resign - skew(100, advert_ms)).abs() <= EPS,
            "trial {trial}: keepalived took over {:.1} ms after our priority 0",
            (up - resign) * 1000.0
        );
        garp_from(&mut watch, &lab, &b_mac, resign, 10.0);
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

/// A keepalived master at 100 ms while ours is configured for 1 s: ours
/// learns the master's interval, so it takes over after 3 × 100 ms + skew,
/// not 3.6 s.
#[test]
fn backup_learns_a_faster_masters_interval() {
    let Some(lab) = lab_or_skip(3) else { return };
    let mut watch = lab.watch(2).unwrap();
    let mut ka = lab.keepalived(0, 150, 100, "").unwrap();
    wait_holds(&lab, 0, 10.0);
    let mut ours = start_ours(&lab, 1, &ours_args(100, 1000, None));
    ours.wait_state("Backup", secs(5.0)).unwrap();
    for trial in 0..trials(100) {
        watch.wait_advert(lab.addr(0), secs(5.0)).unwrap();
        ka.crash();
        let up = t(&ours.wait_state("Master", secs(10.0)).unwrap());
        let last = last_advert(&mut watch, lab.addr(0), up);
        if (up - last - t_down(100, 100)).abs() > EPS {
            for v in watch.lines.drain().iter().rev().take(20) {
                eprintln!("{:.3} {v}", t(v) - up);
            }
            for v in ours.lines.drain() {
                eprintln!("{:.3} {v}", t(v) - up);
            }
        }
        assert_near(
            &format!("trial {trial}: learned interval"),
            up - last,
            t_down(100, 100),
        );
        lab.remove_vip(0);
        ka = lab.keepalived(0, 150, 100, "").unwrap();
        ours.wait_state("Backup", secs(10.0)).unwrap();
    }
}

/// RFC 9568 message-only checksums: our backup accepts and counts them;
/// keepalived drops them and says so (which also shows that the complaint
/// check of the interop tests can fail).
#[test]
fn message_only_checksums_are_accepted_by_ours_and_refused_by_keepalived() {
    let Some(lab) = lab_or_skip(3) else { return };
    let mut a = lab
        .ours(
            0,
            &["--priority", "150", "--advert-ms", "100", "--message-only"],
        )
        .unwrap();
    a.wait_state("Master", secs(5.0)).unwrap();
    let mut b = start_ours(&lab, 1, &ours_args(100, 100, None));
    b.wait_state("Backup", secs(5.0)).unwrap();
    let ka = lab.keepalived(2, 50, 100, "").unwrap();
    let mut n = 0;
    vrrp_lab::wait_until("keepalived to complain", 5.0, || {
        n += 1;
        !ka.complaints().is_empty()
    })
    .unwrap();
    assert!(
        ka.log().contains("Invalid VRRPv3 checksum"),
        "{:?}",
        ka.complaints()
    );
    never_holds_vip(&lab, 1, 1.0);
    let c = b.terminate().unwrap();
    assert!(c["message_only_checksum"].as_u64() > Some(5), "{c}");
    assert_eq!(c["bad_checksum"], 0, "{c}");
}

/// VRRPv2 mode against keepalived's `version 2`.
#[test]
fn vrrpv2_mode_interoperates_with_keepalived() {
    let Some(lab) = lab_or_skip(3) else { return };
    let mut watch = lab.watch(2).unwrap();
    let mut ka = lab.keepalived(0, 150, 1000, "    version 2").unwrap();
    wait_holds(&lab, 0, 10.0);
    let mut ours = lab
        .ours(1, &["--priority", "100", "--advert-ms", "1000", "--v2"])
        .unwrap();
    ours.wait_state("Backup", secs(5.0)).unwrap();
    never_holds_vip(&lab, 1, 3.0);
    assert!(ka.complaints().is_empty(), "{:?}", ka.complaints());
    watch.wait_advert(lab.addr(0), secs(5.0)).unwrap();
    ka.crash();
    let up = t(&ours.wait_state("Master", secs(10.0)).unwrap());
    let last = last_advert(&mut watch, lab.addr(0), up);
    assert_near("VRRPv2 takeover", up - last, t_down(100, 1000));
    let v2 = watch
        .lines
        .wait("a VRRPv2 advert from ours", secs(3.0), |v| {
            v["kind"] == "advert"
                && v["version"] == "V2"
                && v["src"] == lab.addr(1).to_string().as_str()
        })
        .unwrap();
    assert_eq!(v2["interval_cs"], 100);
}

/// `nopreempt`: a higher-priority router that starts while a lower one is
/// master stays backup, and takes over only when the master fails.
#[test]
fn nopreempt_leaves_a_lower_master_in_place() {
    let Some(lab) = lab_or_skip(3) else { return };
    let mut ka = lab.keepalived(1, 100, 100, "").unwrap();
    wait_holds(&lab, 1, 10.0);
    let mut ours = lab
        .ours(
            0,
            &["--priority", "150", "--advert-ms", "100", "--nopreempt"],
        )
        .unwrap();
    ours.wait_state("Backup", secs(5.0)).unwrap();
    never_holds_vip(&lab, 0, 5.0 * t_down(150, 100));
    assert!(!ours.ever("Master"));
    assert!(lab.holds_vip(1));
    ka.crash();
    ours.wait_state("Master", secs(5.0)).unwrap();
    wait_holds(&lab, 0, 1.0);
}

/// Preemption (both ways between ours and keepalived): once they hear
/// each other, the lower one stops advertising within one interval.
#[test]
fn preemption_leaves_two_masters_for_at_most_one_interval() {
    let Some(lab) = lab_or_skip(3) else { return };
    let mut watch = lab.watch(2).unwrap();
    for advert_ms in [1000, 100] {
        let interval = f64::from(advert_ms) / 1000.0;
        for trial in 0..trials(advert_ms) {
            // keepalived master, ours (higher) starts and preempts.
            let ka = lab.keepalived(1, 100, advert_ms, "").unwrap();
            wait_holds(&lab, 1, 10.0);
            let mut ours = start_ours(&lab, 0, &ours_args(150, advert_ms, None));
            let up = t(&ours.wait_state("Master", secs(10.0)).unwrap());
            wait_released(&lab, 1, 2.0 * interval);
            vrrp_lab::pause(secs(interval));
            let late: Vec<_> = watch
                .adverts_between(up + interval + EPS, f64::MAX)
                .into_iter()
                .filter(|(src, _, _)| *src == lab.addr(1).to_string())
                .collect();
            assert!(
                late.is_empty(),
                "{advert_ms} ms trial {trial}: keepalived still master: {late:?}"
            );
            drop(ka);
            ours.terminate().unwrap();

            // ours master, keepalived (higher) starts and preempts.
            let mut ours = start_ours(&lab, 0, &ours_args(100, advert_ms, None));
            ours.wait_state("Master", secs(10.0)).unwrap();
            let ka_started = vrrp_lab::now();
            let mut ka = lab.keepalived(1, 150, advert_ms, "").unwrap();
            let down = t(&ours.wait_state("Backup", secs(10.0)).unwrap());
            let first = watch
                .adverts_from(lab.addr(1))
                .into_iter()
                .filter(|&x| x > ka_started)
                .fold(f64::MAX, f64::min);
            assert!(
                down - first <= EPS,
                "{advert_ms} ms trial {trial}: yielded {:.1} ms after its first advert",
                (down - first) * 1000.0
            );
            vrrp_lab::pause(secs(interval));
            let late = watch
                .adverts_between(down + EPS, f64::MAX)
                .into_iter()
                .filter(|(src, _, _)| *src == lab.addr(0).to_string())
                .count();
            assert_eq!(late, 0, "we advertised after yielding");
            ours.terminate().unwrap();
            ka.terminate();
            lab.remove_vip(0);
            lab.remove_vip(1);
        }
    }
}

/// Equal priorities: a backup does not preempt an equal master (RFC 5798
/// §6.4.2), so the tie-break by address applies when both are master at
/// once: after a partition heals, the higher address stays master, whichever
/// side is ours.
#[test]
fn equal_priorities_go_to_the_higher_address() {
    let Some(lab) = lab_or_skip(3) else { return };
    for advert_ms in [1000, 100] {
        let interval = f64::from(advert_ms) / 1000.0;
        for ours_host in [0, 1] {
            let ka_host = 1 - ours_host;
            let mut ka = lab.keepalived(ka_host, 100, advert_ms, "").unwrap();
            let mut ours = start_ours(&lab, ours_host, &ours_args(100, advert_ms, None));
            vrrp_lab::wait_until("one master", 10.0, || lab.holds_vip(0) != lab.holds_vip(1))
                .unwrap();
            for trial in 0..trials(advert_ms) {
                // Split them: both become master.
                let backup = usize::from(lab.holds_vip(0));
                lab.net.detach(backup).unwrap();
                wait_holds(&lab, backup, 10.0);
                assert!(lab.holds_vip(0) && lab.holds_vip(1));
                let healed = vrrp_lab::now();
                lab.net.attach(backup).unwrap();
                // Host 1 has the higher address: host 0 yields.
                let released = wait_released(&lab, 0, 5.0);
                assert!(
                    released - healed <= interval + EPS,
                    "{advert_ms} ms, ours on host {ours_host}, trial {trial}: two masters for {:.1} ms",
                    (released - healed) * 1000.0
                );
                never_holds_vip(&lab, 0, 2.0 * interval);
                assert!(lab.holds_vip(1));
                let want = if ours_host == 1 { "Master" } else { "Backup" };
                assert_eq!(ours.state(), want);
            }
            ours.terminate().unwrap();
            ka.terminate();
            lab.remove_vip(0);
            lab.remove_vip(1);
        }
    }
}

/// Priority 255 (the address owner) takes over at once on startup.
#[test]
fn priority_255_owner_takes_over_at_startup() {
    let Some(lab) = lab_or_skip(3) else { return };
    for advert_ms in [1000, 100] {
        let interval = f64::from(advert_ms) / 1000.0;
        let _ka = lab.keepalived(1, 100, advert_ms, "").unwrap();
        for trial in 0..trials(advert_ms) {
            wait_holds(&lab, 1, 10.0);
            let mut ours = start_ours(&lab, 0, &ours_args(255, advert_ms, None));
            let started = t(&ours.lines.seen[0]);
            let up = t(&ours.wait_state("Master", secs(2.0)).unwrap());
            assert!(
                up - started < 0.05,
                "{advert_ms} ms trial {trial}: owner became master {:.1} ms after start",
                (up - started) * 1000.0
            );
            let released = wait_released(&lab, 1, 2.0);
            assert!(released - up < interval + EPS);
            // The owner leaves (priority 0): keepalived takes over again.
            ours.terminate().unwrap();
        }
    }
}

/// A backup that finds the VIP on its interface (left by a killed
/// predecessor) removes it within 100 ms of starting.
#[test]
fn restarted_backup_removes_a_stale_vip() {
    let Some(lab) = lab_or_skip(3) else { return };
    for advert_ms in [1000, 100] {
        let ka = lab.keepalived(0, 150, advert_ms, "").unwrap();
        wait_holds(&lab, 0, 10.0);
        for trial in 0..trials(advert_ms) {
            lab.add_vip(1).unwrap();
            assert!(lab.holds_vip(1));
            let mut ours = start_ours(&lab, 1, &ours_args(100, advert_ms, None));
            let started = t(&ours.lines.seen[0]);
            let gone = wait_released(&lab, 1, 1.0);
            assert!(
                gone - started < 0.1,
                "{advert_ms} ms trial {trial}: stale VIP removed after {:.1} ms",
                (gone - started) * 1000.0
            );
            ours.crash();
        }
        drop(ka);
        lab.remove_vip(0);
    }
}

/// SIGSTOP the master beyond Master_Down_Interval, then SIGCONT: the
/// backup took over meanwhile; on resume there is no burst of adverts and
/// a single master (the higher one) within one interval.
#[test]
fn paused_master_resumes_without_a_burst() {
    let Some(lab) = lab_or_skip(3) else { return };
    let mut watch = lab.watch(2).unwrap();
    for advert_ms in [1000, 100] {
        let interval = f64::from(advert_ms) / 1000.0;
        let mut a = start_ours(&lab, 0, &ours_args(150, advert_ms, None));
        a.wait_state("Master", secs(10.0)).unwrap();
        let mut b = start_ours(&lab, 1, &ours_args(100, advert_ms, None));
        b.wait_state("Backup", secs(5.0)).unwrap();
        for trial in 0..trials(advert_ms) {
            a.proc.signal(nix::sys::signal::Signal::SIGSTOP);
            b.wait_state("Master", secs(10.0)).unwrap();
            vrrp_lab::pause(secs(2.0 * interval));
            let resumed = vrrp_lab::now();
            a.proc.signal(nix::sys::signal::Signal::SIGCONT);
            let down = t(&b.wait_state("Backup", secs(5.0)).unwrap());
            assert!(
                down - resumed <= interval + EPS,
                "{advert_ms} ms trial {trial}: two masters for {:.1} ms",
                (down - resumed) * 1000.0
            );
            vrrp_lab::pause(secs(3.0 * interval));
            let from_a: Vec<f64> = watch
                .adverts_between(resumed, f64::MAX)
                .into_iter()
                .filter(|(src, _, _)| *src == lab.addr(0).to_string())
                .map(|(_, _, t)| t)
                .collect();
            assert!(from_a.len() >= 2, "{from_a:?}");
            let min_gap = from_a
                .windows(2)
                .map(|w| w[1] - w[0])
                .fold(f64::MAX, f64::min);
            let seen: Vec<String> = watch
                .adverts_between(resumed - 0.1, f64::MAX)
                .into_iter()
                .map(|(src, p, t)| format!("{src} p{p} {:+.1} ms", (t - resumed) * 1000.0))
                .collect();
            assert!(
                min_gap >= interval / 2.0 - EPS,
                "{advert_ms} ms trial {trial}: adverts {:.1} ms apart after resume: {seen:?}",
                min_gap * 1000.0
            );
            assert!(lab.holds_vip(0) && !lab.holds_vip(1));
        }
        a.terminate().unwrap();
        b.terminate().unwrap();
        lab.remove_vip(1);
    }
}

/// Partition, then heal: the surviving (higher) master is alone within one
/// interval, and a client's ARP entry for the VIP points at it within one
/// interval + 50 ms (keepalived sends no gratuitous ARP here).
#[test]
fn partition_heal_leaves_one_master_and_fresh_arp() {
    let Some(lab) = lab_or_skip(3) else { return };
    let mut watch = lab.watch(2).unwrap();
    let a_mac = lab.mac(0);
    let b_mac = lab.mac(1);
    for advert_ms in [1000, 100] {
        let interval = f64::from(advert_ms) / 1000.0;
        let mut a = start_ours(&lab, 0, &ours_args(150, advert_ms, None));
        a.wait_state("Master", secs(10.0)).unwrap();
        let mut ka = lab.keepalived(1, 100, advert_ms, "").unwrap();
        for trial in 0..trials(advert_ms) {
            lab.cache_arp(2, &a_mac).unwrap();
            lab.net.detach(0).unwrap();
            wait_holds(&lab, 1, 10.0);
            vrrp_lab::wait_until("client's ARP to follow keepalived", 5.0, || {
                lab.arp_entry(2).as_deref() == Some(b_mac.as_str())
            })
            .unwrap();
            let healed = vrrp_lab::now();
            lab.net.attach(0).unwrap();
            vrrp_lab::wait_until("client's ARP to point at the surviving master", 5.0, || {
                lab.arp_entry(2).as_deref() == Some(a_mac.as_str())
            })
            .unwrap();
            let arp = vrrp_lab::now() - healed;
            assert!(
                arp <= interval + 0.05,
                "{advert_ms} ms trial {trial}: ARP fixed after {:.1} ms",
                arp * 1000.0
            );
            let released = wait_released(&lab, 1, 5.0);
            assert!(
                released - healed <= interval + EPS,
                "{advert_ms} ms trial {trial}: two masters for {:.1} ms",
                (released - healed) * 1000.0
            );
            vrrp_lab::pause(secs(interval));
            let late = watch
                .adverts_between(healed + interval + EPS, f64::MAX)
                .into_iter()
                .filter(|(src, _, _)| *src == lab.addr(1).to_string())
                .count();
            assert_eq!(late, 0, "keepalived still advertising after the heal");
            assert_eq!(a.state(), "Master");
        }
        assert!(ka.complaints().is_empty(), "{:?}", ka.complaints());
        a.terminate().unwrap();
        ka.terminate();
        lab.remove_vip(1);
    }
}

/// Health tracking in weight mode, with a hung check: our master (150,
/// weight -60) whose check hangs drops to 90 by timeout, keepalived (100)
/// preempts it, and our adverts keep their rhythm throughout; healthy
/// again, ours preempts back.
#[test]
fn hung_health_check_lowers_priority_without_delaying_adverts() {
    let Some(lab) = lab_or_skip(3) else { return };
    let health = lab.dir().join("healthy");
    std::fs::write(&health, b"").unwrap();
    let hang = health.with_extension("hang");
    let mut watch = lab.watch(2).unwrap();
    let mut ours = lab
        .ours(
            0,
            &[
                "--priority",
                "150",
                "--advert-ms",
                "100",
                "--health-file",
                health.to_str().unwrap(),
                "--health-mode=-60",
                "--health-interval-ms",
                "100",
            ],
        )
        .unwrap();
    let mut master_since = t(&ours.wait_state("Master", secs(5.0)).unwrap());
    let ka = lab.keepalived(1, 100, 100, "").unwrap();
    never_holds_vip(&lab, 1, 1.0);
    for trial in 0..trials(100) {
        let hung = vrrp_lab::now();
        std::fs::write(&hang, b"").unwrap();
        // Priority 90 within two check intervals (one timeout, one tick).
        let lowered = watch
            .lines
            .wait("an advert with priority 90", secs(2.0), |v| {
                v["kind"] == "advert"
                    && v["src"] == lab.addr(0).to_string().as_str()
                    && v["priority"] == 90
            })
            .unwrap();
        assert!(
            t(&lowered) - hung < 0.3 + EPS,
            "trial {trial}: lowered after {:.0} ms",
            (t(&lowered) - hung) * 1000.0
        );
        wait_holds(&lab, 1, 2.0);
        ours.wait_state("Backup", secs(2.0)).unwrap();
        // While master, our adverts never waited for the hung check.
        let ours_adverts: Vec<f64> = watch
            .adverts_between(master_since + 0.05, t(&lowered))
            .into_iter()
            .filter(|(src, _, _)| *src == lab.addr(0).to_string())
            .map(|(_, _, t)| t)
            .collect();
        let max_gap = ours_adverts
            .windows(2)
            .map(|w| w[1] - w[0])
            .fold(0.0, f64::max);
        assert!(
            max_gap <= 0.1 + EPS,
            "trial {trial}: adverts {:.0} ms apart",
            max_gap * 1000.0
        );
        std::fs::remove_file(&hang).unwrap();
        master_since = t(&ours.wait_state("Master", secs(5.0)).unwrap());
        wait_released(&lab, 1, 1.0);
        vrrp_lab::pause(secs(0.5));
    }
    assert!(ka.complaints().is_empty(), "{:?}", ka.complaints());
    let c = ours.terminate().unwrap();
    assert_eq!(c["bad_checksum"], 0);
}
