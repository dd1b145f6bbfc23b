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
