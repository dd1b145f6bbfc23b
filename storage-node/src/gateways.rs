//! The gateways that checked in lately. Gateways send who they are (id,
//! address, VRRP state) with every health check; the node keeps the last
//! report of each for [`TTL`] and hands the list back, so any gateway (and
//! `rondo status`) learns which replica holds the floating address. Soft
//! state only: nothing here is persisted or ordered by the ring.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rondo_proto::storage::v1 as pb;

/// How long a report stays listed.
pub const TTL: Duration = Duration::from_secs(10);
/// At most this many gateways are remembered (a bound against junk ids).
const MAX: usize = 64;

/// Last report per gateway id.
#[derive(Debug, Default)]
pub struct Gateways(Mutex<HashMap<String, (pb::GatewayInfo, Instant)>>);

impl Gateways {
    /// Records a report.
    pub fn heard(&self, info: pb::GatewayInfo) {
        if info.id.is_empty() || info.id.len() > 64 {
            return;
        }
        let now = Instant::now();
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, (_, at)| now.duration_since(*at) < TTL);
        if map.len() >= MAX && !map.contains_key(&info.id) {
            return;
        }
        map.insert(info.id.clone(), (info, now));
    }

    /// Reports heard within [`TTL`], with their age, ordered by id.
    pub fn recent(&self) -> Vec<pb::GatewayInfo> {
        let now = Instant::now();
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<pb::GatewayInfo> = map
            .values()
            .filter(|(_, at)| now.duration_since(*at) < TTL)
            .map(|(info, at)| pb::GatewayInfo {
                age_ms: u64::try_from(now.duration_since(*at).as_millis()).unwrap_or(u64::MAX),
                ..info.clone()
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str, master: bool) -> pb::GatewayInfo {
        pb::GatewayInfo {
            id: id.into(),
            is_master: master,
            ..Default::default()
        }
    }

    #[test]
    fn keeps_the_last_report_per_gateway() {
        let g = Gateways::default();
        g.heard(info("b", false));
        g.heard(info("a", false));
        g.heard(info("a", true));
        g.heard(info("", true));
        let ids: Vec<(String, bool)> = g
            .recent()
            .into_iter()
            .map(|i| (i.id, i.is_master))
            .collect();
        assert_eq!(ids, [("a".to_owned(), true), ("b".to_owned(), false)]);
    }
}
