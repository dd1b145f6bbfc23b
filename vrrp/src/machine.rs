//! The VRRP state machine of RFC 5798 §6.4 as a sans-IO core: the driver
//! feeds it events with the current time (a [`Duration`] since any fixed
//! origin) and carries out the [`Action`]s it returns. There is no clock,
//! socket or timer inside, so every rule can be tested with a fake clock.
//!
//! Timers are deadlines. [`Machine::poll`] fires each due timer at most once
//! and schedules the next from `now`, not from the missed deadline, so a
//! clock jump or a paused process never causes a burst of advertisements.

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::{Advert, Version};

/// The router's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub vrid: u8,
    /// 1–254, or 255 for the owner of the addresses.
    pub priority: u8,
    /// Advertisement interval in centiseconds.
    pub advert_cs: u16,
    /// Preempt a lower-priority master (RFC default: on).
    pub preempt: bool,
    /// This router's primary address (breaks priority ties).
    pub primary: Ipv4Addr,
    /// The virtual addresses.
    pub addresses: Vec<Ipv4Addr>,
    /// Protocol version of the adverts sent (VRRPv2 rounds the interval to
    /// whole seconds on the wire).
    pub version: Version,
}

/// RFC 5798 states.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Initialize,
    Backup,
    Master,
    /// The embedding program reports itself unhealthy (keepalived's FAULT):
    /// silent, never master, until it recovers.
    Fault,
}

/// What the driver must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Multicast (or unicast to peers) this advertisement.
    Send(Advert),
    /// Configure the virtual addresses and announce them by gratuitous ARP.
    TakeAddresses,
    /// Remove the virtual addresses.
    ReleaseAddresses,
    /// The state changed.
    Became(State),
}

/// One virtual router.
#[derive(Clone, Debug)]
pub struct Machine {
    config: Config,
    state: State,
    /// The priority advertised now (health tracking may lower it).
    priority: u8,
    /// When the last advertisement was sent (to rate-limit re-assertion).
    last_sent: Option<Duration>,
    /// A lower-priority master was heard while a re-assertion was not
    /// allowed yet: the next advert comes with gratuitous ARP.
    reassert_pending: bool,
    /// The master's advertisement interval, learned from its adverts.
    master_adver_cs: u16,
    adver_at: Option<Duration>,
    master_down_at: Option<Duration>,
}

fn cs(n: u64) -> Duration {
    Duration::from_millis(n * 10)
}

impl Machine {
    pub fn new(config: Config) -> Machine {
        Machine {
            master_adver_cs: config.advert_cs,
            priority: config.priority,
            last_sent: None,
            reassert_pending: false,
            config,
            state: State::Initialize,
            adver_at: None,
            master_down_at: None,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// The priority advertised now.
    pub fn priority(&self) -> u8 {
        self.priority
    }

    /// The configured advertisement interval in centiseconds.
    pub fn advert_cs(&self) -> u16 {
        self.config.advert_cs
    }

    /// The master's advertisement interval as learned (centiseconds).
    pub fn master_advert_cs(&self) -> u16 {
        self.master_adver_cs
    }

    /// Skew_Time = ((256 − Priority) × Master_Adver_Interval) / 256.
    pub fn skew(&self) -> Duration {
        Duration::from_micros(
            (256 - u64::from(self.priority)) * u64::from(self.master_adver_cs) * 10_000 / 256,
        )
    }

    /// Master_Down_Interval = 3 × Master_Adver_Interval + Skew_Time.
    pub fn master_down_interval(&self) -> Duration {
        cs(3 * u64::from(self.master_adver_cs)) + self.skew()
    }

    /// The earliest pending deadline, for the driver's sleep.
    pub fn next_deadline(&self) -> Option<Duration> {
        match (self.adver_at, self.master_down_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn advert(&self, priority: u8) -> Advert {
        Advert {
            version: self.config.version,
            vrid: self.config.vrid,
            priority,
            interval_cs: self.config.advert_cs,
            addresses: self.config.addresses.clone(),
        }
    }

    fn send(&mut self, now: Duration, priority: u8, out: &mut Vec<Action>) {
        out.push(Action::Send(self.advert(priority)));
        self.last_sent = Some(now);
    }

    fn become_master(&mut self, now: Duration, out: &mut Vec<Action>) {
        self.send(now, self.priority, out);
        self.reassert_pending = false;
        out.push(Action::TakeAddresses);
        self.adver_at = Some(now + cs(u64::from(self.config.advert_cs)));
        self.master_down_at = None;
        self.state = State::Master;
        out.push(Action::Became(State::Master));
    }

    fn become_backup(&mut self, now: Duration, out: &mut Vec<Action>) {
        let was_master = self.state == State::Master;
        self.adver_at = None;
        self.master_down_at = Some(now + self.master_down_interval());
        self.state = State::Backup;
        if was_master {
            out.push(Action::ReleaseAddresses);
        }
        out.push(Action::Became(State::Backup));
    }

    /// Startup event (§6.4.1).
    pub fn startup(&mut self, now: Duration) -> Vec<Action> {
        let mut out = Vec::new();
        if self.state != State::Initialize {
            return out;
        }
        if self.priority == 255 {
            self.become_master(now, &mut out);
        } else {
            self.master_adver_cs = self.config.advert_cs;
            // A backup never holds the addresses: remove any left behind
            // by a killed predecessor (keepalived does not).
            out.push(Action::ReleaseAddresses);
            self.become_backup(now, &mut out);
        }
        out
    }

    /// Shutdown event (§6.4.2, §6.4.3): a master resigns with priority 0.
    pub fn shutdown(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        if self.state == State::Master {
            out.push(Action::Send(self.advert(0)));
            out.push(Action::ReleaseAddresses);
        }
        self.reassert_pending = false;
        self.adver_at = None;
        self.master_down_at = None;
        if self.state != State::Initialize {
            self.state = State::Initialize;
            out.push(Action::Became(State::Initialize));
        }
        out
    }

    /// Fires the timers that are due (each at most once).
    pub fn poll(&mut self, now: Duration) -> Vec<Action> {
        let mut out = Vec::new();
        match self.state {
            State::Backup => {
                if self.master_down_at.is_some_and(|t| t <= now) {
                    self.become_master(now, &mut out);
                }
            }
            State::Master => {
                if self.adver_at.is_some_and(|t| t <= now) {
                    self.send(now, self.priority, &mut out);
                    if std::mem::take(&mut self.reassert_pending) {
                        out.push(Action::TakeAddresses);
                    }
                    self.adver_at = Some(now + cs(u64::from(self.config.advert_cs)));
                }
            }
            State::Initialize | State::Fault => {}
        }
        out
    }

    /// Health tracking in weight mode: advertise `priority` from now on
    /// (the configured priority plus the weight of the failing checks). A
    /// master announces the change at once, so that a backup of higher
    /// priority can preempt it.
    pub fn set_priority(&mut self, now: Duration, priority: u8) -> Vec<Action> {
        let mut out = Vec::new();
        let priority = priority.clamp(1, 254);
        if self.config.priority == 255 || priority == self.priority {
            return out;
        }
        self.priority = priority;
        if self.state == State::Master {
            self.send(now, priority, &mut out);
            self.adver_at = Some(now + cs(u64::from(self.config.advert_cs)));
        }
        out
    }

    /// Health tracking in fault mode: a failing router resigns at once
    /// (priority 0, so a backup takes over after its skew) and stays
    /// silent; on recovery it starts again as a backup.
    pub fn set_fault(&mut self, now: Duration, fault: bool) -> Vec<Action> {
        let mut out = Vec::new();
        match (fault, self.state) {
            (true, State::Fault) | (false, State::Initialize) => {}
            (true, _) => {
                if self.state == State::Master {
                    self.send(now, 0, &mut out);
                    out.push(Action::ReleaseAddresses);
                }
                self.adver_at = None;
                self.master_down_at = None;
                self.reassert_pending = false;
                self.state = State::Fault;
                out.push(Action::Became(State::Fault));
            }
            (false, State::Fault) => {
                self.master_adver_cs = self.config.advert_cs;
                self.become_backup(now, &mut out);
            }
            (false, _) => {}
        }
        out
    }

    /// An advertisement for this VRID arrived from `src` (already checked by
    /// the codec: TTL, checksum, version, VRID).
    pub fn receive(&mut self, now: Duration, src: Ipv4Addr, advert: &Advert) -> Vec<Action> {
        let mut out = Vec::new();
        let local = self.priority;
        match self.state {
            State::Initialize | State::Fault => {}
            State::Backup => {
                if advert.priority == 0 {
                    // The master resigned: take over after Skew_Time.
                    self.master_down_at = Some(now + self.skew());
                } else if !self.config.preempt || advert.priority >= local {
                    self.master_adver_cs = advert.interval_cs;
                    self.master_down_at = Some(now + self.master_down_interval());
                }
                // Otherwise a lower-priority master: let the timer run out
                // and preempt it.
            }
            State::Master => {
                if advert.priority == 0 {
                    // Another master resigned: assert ourselves at once.
                    self.send(now, local, &mut out);
                    self.adver_at = Some(now + cs(u64::from(self.config.advert_cs)));
                } else if advert.priority > local
                    || (advert.priority == local && src > self.config.primary)
                {
                    self.master_adver_cs = advert.interval_cs;
                    self.become_backup(now, &mut out);
                } else {
                    // A lower-priority router thinks it is master (after a
                    // partition heals): re-assert at once, with gratuitous
                    // ARP, so that clients on its side learn our address
                    // (keepalived sends none here). At most once per half
                    // interval: adverts queued while this process was
                    // paused must not cause a burst; otherwise the next
                    // regular advert carries the gratuitous ARP.
                    let half = cs(u64::from(self.config.advert_cs)) / 2;
                    if self.last_sent.is_none_or(|t| now >= t + half) {
                        self.send(now, local, &mut out);
                        out.push(Action::TakeAddresses);
                        self.adver_at = Some(now + cs(u64::from(self.config.advert_cs)));
                    } else {
                        self.reassert_pending = true;
                    }
                }
            }
        }
        out
    }
}
