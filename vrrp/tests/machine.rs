//! RFC 5798 §6.4, one test per rule, on a fake clock.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;
use std::time::Duration;

use vrrp::machine::Config;
use vrrp::{Action, Advert, Machine, State, Version};

const ME: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn machine(priority: u8, advert_cs: u16, preempt: bool) -> Machine {
    Machine::new(Config {
        vrid: 51,
        priority,
        advert_cs,
        preempt,
        primary: ME,
        addresses: vec![VIP],
        version: Version::V3,
    })
}

fn advert(priority: u8, interval_cs: u16) -> Advert {
    Advert {
        version: Version::V3,
        vrid: 51,
        priority,
        interval_cs,
        addresses: vec![VIP],
    }
}

fn sent(actions: &[Action]) -> Vec<u8> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(ad) => Some(ad.priority),
            _ => None,
        })
        .collect()
}

#[test]
fn intervals_follow_the_formulas() {
    // Master_Down_Interval = 3 × advert + (256 − p) × advert / 256.
    let m = machine(100, 100, true);
    assert_eq!(m.skew(), Duration::from_micros(609_375));
    assert_eq!(
        m.master_down_interval(),
        ms(3609) + Duration::from_micros(375)
    );
    let fast = machine(150, 10, true);
    assert_eq!(
        fast.master_down_interval(),
        Duration::from_micros(300_000 + 41_406)
    );
}

#[test]
fn startup_with_priority_255_becomes_master_at_once() {
    let mut m = machine(255, 100, true);
    let out = m.startup(ms(0));
    assert_eq!(m.state(), State::Master);
    assert_eq!(sent(&out), [255]);
    assert!(out.contains(&Action::TakeAddresses));
}

#[test]
fn startup_below_255_becomes_backup_and_drops_a_stale_address() {
    let mut m = machine(100, 100, true);
    let out = m.startup(ms(0));
    assert_eq!(m.state(), State::Backup);
    assert!(sent(&out).is_empty());
    assert_eq!(
        out.first(),
        Some(&Action::ReleaseAddresses),
        "stale VIP removed"
    );
    assert_eq!(m.next_deadline(), Some(m.master_down_interval()));
}

#[test]
fn backup_takes_over_when_the_master_goes_silent() {
    let mut m = machine(100, 100, true);
    m.startup(ms(0));
    let down = m.master_down_interval();
    assert!(m.poll(down - ms(1)).is_empty());
    let out = m.poll(down);
    assert_eq!(m.state(), State::Master);
    assert_eq!(sent(&out), [100]);
    assert!(out.contains(&Action::TakeAddresses));
}

#[test]
fn backup_resets_its_timer_on_a_higher_or_equal_advert_and_learns_the_interval() {
    let mut m = machine(100, 100, true);
    m.startup(ms(0));
    // The master advertises every 0.1 s: the backup learns it.
    m.receive(ms(3000), Ipv4Addr::new(10, 0, 0, 9), &advert(150, 10));
    assert_eq!(
        m.master_down_interval(),
        Duration::from_micros(300_000 + 60_937)
    );
    assert_eq!(m.next_deadline(), Some(ms(3000) + m.master_down_interval()));
    m.receive(ms(3100), Ipv4Addr::new(10, 0, 0, 9), &advert(100, 10));
    assert_eq!(
        m.next_deadline(),
        Some(ms(3100) + m.master_down_interval()),
        "equal priority too"
    );
    assert_eq!(m.state(), State::Backup);
}

#[test]
fn backup_with_preemption_ignores_a_lower_master_and_preempts_it() {
    let mut m = machine(150, 100, true);
    m.startup(ms(0));
    let deadline = m.next_deadline();
    m.receive(ms(500), Ipv4Addr::new(10, 0, 0, 9), &advert(100, 100));
    assert_eq!(
        m.next_deadline(),
        deadline,
        "a lower master does not reset the timer"
    );
    m.poll(deadline.unwrap());
    assert_eq!(m.state(), State::Master);
}

#[test]
fn backup_without_preemption_follows_a_lower_master() {
    let mut m = machine(150, 100, false);
    m.startup(ms(0));
    m.receive(ms(500), Ipv4Addr::new(10, 0, 0, 9), &advert(100, 100));
    assert_eq!(m.next_deadline(), Some(ms(500) + m.master_down_interval()));
    m.poll(ms(501));
    assert_eq!(m.state(), State::Backup);
}

#[test]
fn backup_takes_over_after_skew_when_the_master_resigns() {
    let mut m = machine(100, 100, true);
    m.startup(ms(0));
    m.receive(ms(1000), Ipv4Addr::new(10, 0, 0, 9), &advert(0, 100));
    assert_eq!(m.next_deadline(), Some(ms(1000) + m.skew()));
    m.poll(ms(1000) + m.skew());
    assert_eq!(m.state(), State::Master);
}

#[test]
fn master_advertises_every_interval_without_bursts_after_a_pause() {
    let mut m = machine(255, 100, true);
    m.startup(ms(0));
    assert_eq!(sent(&m.poll(ms(999))), Vec::<u8>::new());
    assert_eq!(sent(&m.poll(ms(1000))), [255]);
    // Paused (or the clock jumped) for 10 s: one advert, not ten.
    assert_eq!(sent(&m.poll(ms(11_000))), [255]);
    assert_eq!(m.next_deadline(), Some(ms(12_000)));
}

#[test]
fn master_yields_to_a_higher_priority() {
    let mut m = machine(100, 100, true);
    m.startup(ms(0));
    m.poll(m.master_down_interval());
    let out = m.receive(ms(5000), Ipv4Addr::new(10, 0, 0, 9), &advert(200, 100));
    assert_eq!(m.state(), State::Backup);
    assert!(out.contains(&Action::ReleaseAddresses));
    assert!(sent(&out).is_empty());
}

#[test]
fn equal_priorities_are_broken_by_the_higher_primary_address() {
    let mut m = machine(100, 100, true);
    m.startup(ms(0));
    m.poll(m.master_down_interval());
    // A lower address with the same priority: we stay master.
    m.receive(ms(5000), Ipv4Addr::new(10, 0, 0, 1), &advert(100, 100));
    assert_eq!(m.state(), State::Master);
    // A higher address with the same priority: we yield.
    m.receive(ms(5100), Ipv4Addr::new(10, 0, 0, 3), &advert(100, 100));
    assert_eq!(m.state(), State::Backup);
}

#[test]
fn master_reasserts_with_gratuitous_arp_against_a_lower_master() {
    let mut m = machine(150, 100, true);
    m.startup(ms(0));
    m.poll(m.master_down_interval());
    let out = m.receive(ms(6000), Ipv4Addr::new(10, 0, 0, 9), &advert(100, 100));
    assert_eq!(m.state(), State::Master);
    assert_eq!(sent(&out), [150]);
    assert!(out.contains(&Action::TakeAddresses), "gratuitous ARP again");
}

#[test]
fn master_answers_a_resigning_peer_with_an_advert() {
    let mut m = machine(150, 100, true);
    m.startup(ms(0));
    m.poll(m.master_down_interval());
    let out = m.receive(ms(6000), Ipv4Addr::new(10, 0, 0, 9), &advert(0, 100));
    assert_eq!(sent(&out), [150]);
    assert_eq!(m.next_deadline(), Some(ms(7000)));
}

#[test]
fn shutdown_of_a_master_sends_priority_zero_and_releases() {
    let mut m = machine(255, 100, true);
    m.startup(ms(0));
    let out = m.shutdown();
    assert_eq!(sent(&out), [0]);
    assert!(out.contains(&Action::ReleaseAddresses));
    assert_eq!(m.state(), State::Initialize);
    assert_eq!(m.next_deadline(), None);
}

#[test]
fn shutdown_of_a_backup_is_silent() {
    let mut m = machine(100, 100, true);
    m.startup(ms(0));
    let out = m.shutdown();
    assert!(sent(&out).is_empty());
    assert_eq!(m.state(), State::Initialize);
}

#[test]
fn adverts_queued_during_a_pause_cause_one_reassertion_not_a_burst() {
    let mut m = machine(150, 10, true);
    m.startup(ms(0));
    let t0 = m.master_down_interval();
    m.poll(t0);
    // Paused for 2 s; a lower master took over meanwhile and its 20
    // queued adverts are read at once on resume.
    let resume = t0 + ms(2000);
    let mut out = Vec::new();
    for _ in 0..20 {
        out.extend(m.receive(resume, Ipv4Addr::new(10, 0, 0, 9), &advert(100, 10)));
    }
    out.extend(m.poll(resume));
    assert_eq!(sent(&out), [150], "one advert, not a burst");
    assert_eq!(m.state(), State::Master);
}

#[test]
fn a_lower_master_heard_right_after_an_advert_gets_arp_with_the_next_advert() {
    let mut m = machine(150, 100, true);
    m.startup(ms(0));
    let t0 = m.master_down_interval();
    m.poll(t0);
    // 100 ms after our advert: too soon to re-advertise.
    let out = m.receive(t0 + ms(100), Ipv4Addr::new(10, 0, 0, 9), &advert(100, 100));
    assert!(sent(&out).is_empty());
    let out = m.poll(t0 + ms(1000));
    assert_eq!(sent(&out), [150]);
    assert!(out.contains(&Action::TakeAddresses), "gratuitous ARP");
}

#[test]
fn fault_makes_a_master_resign_and_stay_silent_until_healthy() {
    let mut m = machine(150, 100, true);
    m.startup(ms(0));
    let t0 = m.master_down_interval();
    m.poll(t0);
    let out = m.set_fault(t0 + ms(10), true);
    assert_eq!(sent(&out), [0]);
    assert!(out.contains(&Action::ReleaseAddresses));
    assert_eq!(m.state(), State::Fault);
    assert_eq!(m.next_deadline(), None);
    // Silence from everyone does not make a faulty router master.
    assert!(m.poll(t0 + ms(60_000)).is_empty());
    assert!(
        m.receive(t0 + ms(60_000), Ipv4Addr::new(10, 0, 0, 9), &advert(0, 100))
            .is_empty()
    );
    // Healthy again: a backup, which takes over only by the usual rules.
    let back = t0 + ms(61_000);
    m.set_fault(back, false);
    assert_eq!(m.state(), State::Backup);
    assert_eq!(m.next_deadline(), Some(back + m.master_down_interval()));
}

#[test]
fn weight_lowers_the_advertised_priority_and_the_master_says_so_at_once() {
    let mut m = machine(150, 100, true);
    m.startup(ms(0));
    let t0 = m.master_down_interval();
    m.poll(t0);
    let out = m.set_priority(t0 + ms(10), 90);
    assert_eq!(sent(&out), [90]);
    assert_eq!(m.priority(), 90);
    // A backup of priority 100 now preempts it.
    let out = m.receive(t0 + ms(500), Ipv4Addr::new(10, 0, 0, 1), &advert(100, 100));
    assert_eq!(m.state(), State::Backup);
    assert!(out.contains(&Action::ReleaseAddresses));
}

#[test]
fn vrrpv2_mode_sends_version_2_adverts() {
    let mut m = Machine::new(Config {
        vrid: 51,
        priority: 255,
        advert_cs: 100,
        preempt: true,
        primary: ME,
        addresses: vec![VIP],
        version: Version::V2,
    });
    let out = m.startup(ms(0));
    let v: Vec<Version> = out
        .iter()
        .filter_map(|a| match a {
            Action::Send(ad) => Some(ad.version),
            _ => None,
        })
        .collect();
    assert_eq!(v, [Version::V2]);
}
