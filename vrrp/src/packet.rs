//! The VRRP advertisement codec (RFC 5798 §5.1 for version 3, RFC 3768 §5
//! for version 2), for IPv4.
//!
//! The VRRPv3 checksum has two forms in the wild: over an IPv4 pseudo-header
//! plus the message (RFC 5798 §5.2.8 as keepalived reads it, and what
//! keepalived requires), and over the message only (RFC 9568, Cisco,
//! Juniper). [`Advert::encode`] takes the form to send; [`Advert::decode`]
//! accepts either and reports which one matched. VRRPv2 checksums the
//! message only. Nothing here panics on any input.

use std::net::Ipv4Addr;

/// IP protocol number of VRRP.
pub const PROTOCOL: u8 = 112;
/// The VRRP multicast group.
pub const GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// The TTL a VRRP packet is sent with and must arrive with.
pub const TTL: u8 = 255;

const TYPE_ADVERTISEMENT: u8 = 1;
const V2_AUTH_DATA: usize = 8;

/// Protocol version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Version {
    /// RFC 3768: whole-second intervals, authentication fields.
    V2,
    /// RFC 5798: centisecond intervals.
    V3,
}

/// Which checksum a packet carries, or is to be sent with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChecksumKind {
    /// IPv4 pseudo-header plus message (keepalived's VRRPv3 form).
    PseudoHeader,
    /// Message only (RFC 9568 for VRRPv3; always for VRRPv2).
    MessageOnly,
}

/// A VRRP advertisement.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Advert {
    pub version: Version,
    /// Virtual router id, 1–255.
    pub vrid: u8,
    /// 0 (the master resigns) to 255 (the address owner).
    pub priority: u8,
    /// Advertisement interval in centiseconds (VRRPv3: 12 bits; VRRPv2:
    /// whole seconds on the wire, so a multiple of 100).
    pub interval_cs: u16,
    /// The virtual addresses.
    pub addresses: Vec<Ipv4Addr>,
}

/// Why a packet was refused; each is counted by the driver.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("packet of {len} bytes is too short")]
    TooShort { len: usize },
    #[error("IPv4 header is malformed")]
    BadIpHeader,
    #[error("IP protocol {0} is not VRRP")]
    NotVrrp(u8),
    #[error("TTL {0} is not 255")]
    WrongTtl(u8),
    #[error("version {0} is not 2 or 3")]
    WrongVersion(u8),
    #[error("type {0} is not an advertisement")]
    WrongType(u8),
    #[error("length {len} does not match {count} addresses")]
    WrongLength { len: usize, count: u8 },
    #[error("checksum does not match")]
    BadChecksum,
    #[error("VRRPv2 interval {0} s cannot be encoded")]
    BadInterval(u16),
}

/// The Internet checksum (RFC 1071) of the concatenated parts.
fn internet_checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    let mut odd: Option<u8> = None;
    for part in parts {
        for &b in *part {
            match odd.take() {
                Some(hi) => sum += u32::from(u16::from_be_bytes([hi, b])),
                None => odd = Some(b),
            }
        }
    }
    if let Some(hi) = odd {
        sum += u32::from(u16::from_be_bytes([hi, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn pseudo_header(src: Ipv4Addr, dst: Ipv4Addr, len: usize) -> [u8; 12] {
    let mut p = [0u8; 12];
    p[..4].copy_from_slice(&src.octets());
    p[4..8].copy_from_slice(&dst.octets());
    p[9] = PROTOCOL;
    let len = u16::try_from(len).unwrap_or(u16::MAX);
    p[10..12].copy_from_slice(&len.to_be_bytes());
    p
}

impl Advert {
    /// The VRRP message (the IP payload), with its checksum. `src` and
    /// `dst` are the IPv4 addresses it will be sent with (for the
    /// pseudo-header form). VRRPv2 always uses the message-only form.
    pub fn encode(
        &self,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        kind: ChecksumKind,
    ) -> Result<Vec<u8>, DecodeError> {
        let count = u8::try_from(self.addresses.len()).unwrap_or(u8::MAX);
        let mut m = Vec::with_capacity(8 + 4 * self.addresses.len() + V2_AUTH_DATA);
        match self.version {
            Version::V3 => {
                m.extend_from_slice(&[0x30 | TYPE_ADVERTISEMENT, self.vrid, self.priority, count]);
                m.extend_from_slice(&(self.interval_cs & 0x0fff).to_be_bytes());
            }
            Version::V2 => {
                if !self.interval_cs.is_multiple_of(100) || self.interval_cs / 100 > 255 {
                    return Err(DecodeError::BadInterval(self.interval_cs));
                }
                let secs = u8::try_from(self.interval_cs / 100)
                    .map_err(|_| DecodeError::BadInterval(self.interval_cs))?;
                // Authentication type 0 (none), as keepalived sends.
                m.extend_from_slice(&[
                    0x20 | TYPE_ADVERTISEMENT,
                    self.vrid,
                    self.priority,
                    count,
                    0,
                    secs,
                ]);
            }
        }
        m.extend_from_slice(&[0, 0]);
        for a in self.addresses.iter().take(usize::from(count)) {
            m.extend_from_slice(&a.octets());
        }
        if self.version == Version::V2 {
            m.extend_from_slice(&[0; V2_AUTH_DATA]);
        }
        let sum = match (self.version, kind) {
            (Version::V3, ChecksumKind::PseudoHeader) => {
                internet_checksum(&[&pseudo_header(src, dst, m.len()), &m])
            }
            _ => internet_checksum(&[&m]),
        };
        m[6..8].copy_from_slice(&sum.to_be_bytes());
        Ok(m)
    }

    /// Decodes a VRRP message that arrived from `src` to `dst`, checking
    /// version, type, length and checksum (either form for VRRPv3).
    pub fn decode(
        message: &[u8],
        src: Ipv4Addr,
        dst: Ipv4Addr,
    ) -> Result<(Advert, ChecksumKind), DecodeError> {
        let head: [u8; 8] = message
            .get(..8)
            .and_then(|h| h.try_into().ok())
            .ok_or(DecodeError::TooShort { len: message.len() })?;
        let version = match head[0] >> 4 {
            2 => Version::V2,
            3 => Version::V3,
            v => return Err(DecodeError::WrongVersion(v)),
        };
        if head[0] & 0x0f != TYPE_ADVERTISEMENT {
            return Err(DecodeError::WrongType(head[0] & 0x0f));
        }
        let count = head[3];
        let expected = 8
            + 4 * usize::from(count)
            + if version == Version::V2 {
                V2_AUTH_DATA
            } else {
                0
            };
        if message.len() != expected {
            return Err(DecodeError::WrongLength {
                len: message.len(),
                count,
            });
        }
        let kind = if version == Version::V3
            && internet_checksum(&[&pseudo_header(src, dst, message.len()), message]) == 0
        {
            ChecksumKind::PseudoHeader
        } else if internet_checksum(&[message]) == 0 {
            ChecksumKind::MessageOnly
        } else {
            return Err(DecodeError::BadChecksum);
        };
        let interval_cs = match version {
            Version::V3 => u16::from_be_bytes([head[4], head[5]]) & 0x0fff,
            Version::V2 => u16::from(head[5]) * 100,
        };
        let addresses = message[8..8 + 4 * usize::from(count)]
            .chunks_exact(4)
            .map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3]))
            .collect();
        Ok((
            Advert {
                version,
                vrid: head[1],
                priority: head[2],
                interval_cs,
                addresses,
            },
            kind,
        ))
    }
}

/// An IPv4 packet carrying VRRP, as a raw socket delivers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub advert: Advert,
    pub checksum: ChecksumKind,
}

/// Decodes an IPv4 packet (header included): protocol 112 and TTL 255 are
/// required (RFC 5798 §7.1), then the VRRP message is decoded.
pub fn decode_ipv4(packet: &[u8]) -> Result<Received, DecodeError> {
    let first = *packet.first().ok_or(DecodeError::TooShort { len: 0 })?;
    let ihl = usize::from(first & 0x0f) * 4;
    if first >> 4 != 4 || ihl < 20 {
        return Err(DecodeError::BadIpHeader);
    }
    let header = packet
        .get(..ihl)
        .ok_or(DecodeError::TooShort { len: packet.len() })?;
    let total = usize::from(u16::from_be_bytes([header[2], header[3]]));
    if total < ihl || total > packet.len() {
        return Err(DecodeError::BadIpHeader);
    }
    if header[9] != PROTOCOL {
        return Err(DecodeError::NotVrrp(header[9]));
    }
    if header[8] != TTL {
        return Err(DecodeError::WrongTtl(header[8]));
    }
    let src = Ipv4Addr::new(header[12], header[13], header[14], header[15]);
    let dst = Ipv4Addr::new(header[16], header[17], header[18], header[19]);
    let (advert, checksum) = Advert::decode(&packet[ihl..total], src, dst)?;
    Ok(Received {
        src,
        dst,
        advert,
        checksum,
    })
}

/// A gratuitous ARP frame announcing `vip` at `mac`, as keepalived sends it:
/// an ARP request (op 1) broadcast, sender and target IP both the virtual
/// address, target MAC ff:ff:ff:ff:ff:ff. The kernel pads it to 60 bytes.
pub fn gratuitous_arp(mac: [u8; 6], vip: Ipv4Addr) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    // Hardware Ethernet, protocol IPv4, lengths 6 and 4, op request.
    f[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&vip.octets());
    f[32..38].copy_from_slice(&[0xff; 6]);
    f[38..42].copy_from_slice(&vip.octets());
    f
}
