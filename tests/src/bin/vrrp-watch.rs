//! A passive observer on a lab interface: one JSON line per VRRP advert or
//! ARP frame seen, with a wall-clock timestamp (the tests' packet capture).

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;

fn main() -> anyhow::Result<()> {
    let name = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: vrrp-watch INTERFACE"))?;
    let iface = pnet_datalink::interfaces()
        .into_iter()
        .find(|i| i.name == name)
        .ok_or_else(|| anyhow::anyhow!("no interface {name}"))?;
    let cfg = pnet_datalink::Config {
        promiscuous: true,
        ..Default::default()
    };
    let pnet_datalink::Channel::Ethernet(_tx, mut rx) = pnet_datalink::channel(&iface, cfg)? else {
        anyhow::bail!("no Ethernet channel on {name}");
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", json!({"t": now(), "kind": "ready"}))?;
    out.flush()?;
    loop {
        let frame = rx.next()?;
        let t = now();
        let Some(kind) = frame.get(12..14) else {
            continue;
        };
        let line = match kind {
            [0x08, 0x00] => match vrrp::packet::decode_ipv4(&frame[14..]) {
                Ok(r) => json!({
                    "t": t, "kind": "advert", "src": r.src.to_string(), "dst": r.dst.to_string(),
                    "priority": r.advert.priority, "interval_cs": r.advert.interval_cs,
                    "version": format!("{:?}", r.advert.version),
                }),
                Err(vrrp::DecodeError::NotVrrp(_)) => continue,
                Err(e) => json!({"t": t, "kind": "bad", "error": e.to_string()}),
            },
            [0x08, 0x06] if frame.len() >= 42 => json!({
                "t": t, "kind": "arp", "op": u16::from_be_bytes([frame[20], frame[21]]),
                "sha": hex(&frame[22..28]), "spa": ip(&frame[28..32]), "tpa": ip(&frame[38..42]),
            }),
            _ => continue,
        };
        writeln!(out, "{line}")?;
        out.flush()?;
    }
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn ip(b: &[u8]) -> String {
    b.iter().map(u8::to_string).collect::<Vec<_>>().join(".")
}
