//! A passive observer on a lab interface: one JSON line per VRRP advert or
//! ARP frame seen, with the kernel's receive timestamp (SO_TIMESTAMPNS, as
//! tcpdump uses), so that a busy machine delaying this process does not
//! distort the times the tests compare.

use std::io::{IoSliceMut, Write};
use std::os::fd::AsRawFd;

use nix::sys::socket::{
    AddressFamily, ControlMessageOwned, LinkAddr, MsgFlags, SockFlag, SockProtocol, SockType,
    recvmsg, setsockopt, socket, sockopt,
};
use serde_json::json;

/// `sll_pkttype` of frames this host sent.
const PACKET_OUTGOING: u8 = 4;

fn main() -> anyhow::Result<()> {
    let name = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: vrrp-watch INTERFACE"))?;
    let ifindex = nix::net::if_::if_nametoindex(name.as_str())? as usize;
    let fd = socket(
        AddressFamily::Packet,
        SockType::Raw,
        SockFlag::empty(),
        SockProtocol::EthAll,
    )?;
    setsockopt(&fd, sockopt::ReceiveTimestampns, &true)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", json!({"t": now(), "kind": "ready"}))?;
    out.flush()?;
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, t) = {
            let mut iov = [IoSliceMut::new(&mut buf)];
            let mut space = nix::cmsg_space!(nix::sys::time::TimeSpec);
            let msg = recvmsg::<LinkAddr>(
                fd.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::empty(),
            )?;
            let Some(addr) = msg.address else { continue };
            if addr.ifindex() != ifindex || addr.pkttype() == PACKET_OUTGOING {
                continue;
            }
            let t = msg
                .cmsgs()?
                .find_map(|c| match c {
                    ControlMessageOwned::ScmTimestampns(ts) => {
                        Some(ts.tv_sec() as f64 + ts.tv_nsec() as f64 / 1e9)
                    }
                    _ => None,
                })
                .unwrap_or_else(now);
            (msg.bytes, t)
        };
        let frame = &buf[..n];
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
                Err(vrrp::DecodeError::NotVrrp(_) | vrrp::DecodeError::BadIpHeader) => continue,
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
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
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
