//! The codec against frames captured from keepalived 2.2.7 on this kind of
//! machine (copied from the project's shared VRRP notes; lab: A 10.213.0.11
//! priority 150, B 10.213.0.12 priority 100, VIP 10.213.0.100, VRID 51), and
//! property tests: round trips, and no panic on arbitrary bytes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;

use proptest::prelude::*;
use vrrp::packet::{self, GROUP};
use vrrp::{Advert, ChecksumKind, DecodeError, Version};

const A: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 11);
const B: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 12);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 100);

/// (label, source, version, priority, interval in cs, frame from Ethernet on)
const CAPTURED: &[(&str, Ipv4Addr, Version, u8, u16, &str)] = &[
    (
        "v3 adv1 A p150",
        A,
        Version::V3,
        150,
        100,
        "01005e00001202130000000a080045c0002000010000ff70cfba0ad5000be000001231339601006441bf0ad50064",
    ),
    (
        "v3 adv1 B p100",
        B,
        Version::V3,
        100,
        100,
        "01005e00001202130000000b080045c0002000010000ff70cfb90ad5000ce000001231336401006473be0ad50064",
    ),
    (
        "v3 adv1 A p0",
        A,
        Version::V3,
        0,
        100,
        "01005e00001202130000000a080045c0002000060000ff70cfb50ad5000be0000012313300010064d7bf0ad50064",
    ),
    (
        "v3 adv1 A p90",
        A,
        Version::V3,
        90,
        100,
        "01005e00001202130000000a080045c0002000080000ff70cfb30ad5000be000001231335a0100647dbf0ad50064",
    ),
    (
        "v3 adv0.1 A p150",
        A,
        Version::V3,
        150,
        10,
        "01005e00001202130000000a080045c0002000010000ff70cfba0ad5000be000001231339601000a42190ad50064",
    ),
    (
        "v3 adv0.1 B p100",
        B,
        Version::V3,
        100,
        10,
        "01005e00001202130000000b080045c0002000010000ff70cfb90ad5000ce000001231336401000a74180ad50064",
    ),
    (
        "v3 adv0.1 A p0",
        A,
        Version::V3,
        0,
        10,
        "01005e00001202130000000a080045c00020000f0000ff70cfac0ad5000be000001231330001000ad8190ad50064",
    ),
    (
        "v3 adv0.1 A p90",
        A,
        Version::V3,
        90,
        10,
        "01005e00001202130000000a080045c0002000260000ff70cf950ad5000be000001231335a01000a7e190ad50064",
    ),
    (
        "v2 adv1 A p150",
        A,
        Version::V2,
        150,
        100,
        "01005e00001202130000000a080045c0002800010000ff70cfb20ad5000be00000122133960100013d910ad500640000000000000000",
    ),
    (
        "v2 adv1 B p100",
        B,
        Version::V2,
        100,
        100,
        "01005e00001202130000000b080045c0002800010000ff70cfb10ad5000ce00000122133640100016f910ad500640000000000000000",
    ),
    (
        "v2 adv1 A p0",
        A,
        Version::V2,
        0,
        100,
        "01005e00001202130000000a080045c0002800060000ff70cfad0ad5000be0000012213300010001d3910ad500640000000000000000",
    ),
    (
        "v2 adv1 A p90",
        A,
        Version::V2,
        90,
        100,
        "01005e00001202130000000a080045c0002800080000ff70cfab0ad5000be000001221335a01000179910ad500640000000000000000",
    ),
];

/// Message-only (RFC 9568) forms of the same v3 payloads, computed (not
/// captured: keepalived rejects them). (source, priority, interval, payload)
const MESSAGE_ONLY: &[(Ipv4Addr, u8, u16, &str)] = &[
    (A, 150, 100, "3133960100642d2e0ad50064"),
    (B, 100, 100, "3133640100645f2e0ad50064"),
    (A, 0, 100, "313300010064c32e0ad50064"),
    (A, 150, 10, "31339601000a2d880ad50064"),
];

fn ip_packet(frame_hex: &str) -> Vec<u8> {
    hex::decode(frame_hex).unwrap()[14..].to_vec()
}

#[test]
fn captured_frames_decode_to_their_fields() {
    for (label, src, version, priority, interval, frame) in CAPTURED {
        let got = packet::decode_ipv4(&ip_packet(frame)).unwrap_or_else(|e| panic!("{label}: {e}"));
        assert_eq!(got.src, *src, "{label}");
        assert_eq!(got.dst, GROUP, "{label}");
        assert_eq!(
            got.advert,
            Advert {
                version: *version,
                vrid: 51,
                priority: *priority,
                interval_cs: *interval,
                addresses: vec![VIP]
            },
            "{label}"
        );
        let kind = if *version == Version::V3 {
            ChecksumKind::PseudoHeader
        } else {
            ChecksumKind::MessageOnly
        };
        assert_eq!(got.checksum, kind, "{label}: keepalived's checksum form");
    }
}

#[test]
fn encoder_reproduces_the_captured_payloads_byte_for_byte() {
    for (label, src, version, priority, interval, frame) in CAPTURED {
        let packet = ip_packet(frame);
        let advert = Advert {
            version: *version,
            vrid: 51,
            priority: *priority,
            interval_cs: *interval,
            addresses: vec![VIP],
        };
        let encoded = advert
            .encode(*src, GROUP, ChecksumKind::PseudoHeader)
            .unwrap();
        assert_eq!(hex::encode(&encoded), hex::encode(&packet[20..]), "{label}");
    }
}

#[test]
fn message_only_vectors_in_message_only_mode() {
    for (src, priority, interval, payload) in MESSAGE_ONLY {
        let advert = Advert {
            version: Version::V3,
            vrid: 51,
            priority: *priority,
            interval_cs: *interval,
            addresses: vec![VIP],
        };
        let encoded = advert
            .encode(*src, GROUP, ChecksumKind::MessageOnly)
            .unwrap();
        assert_eq!(hex::encode(&encoded), *payload);
        let (back, kind) = Advert::decode(&encoded, *src, GROUP).unwrap();
        assert_eq!(
            (back, kind),
            (advert, ChecksumKind::MessageOnly),
            "accepted and counted"
        );
    }
    // Two addresses, both forms.
    let two = Advert {
        version: Version::V3,
        vrid: 51,
        priority: 150,
        interval_cs: 100,
        addresses: vec![VIP, Ipv4Addr::new(10, 213, 0, 101)],
    };
    assert_eq!(
        hex::encode(two.encode(A, GROUP, ChecksumKind::PseudoHeader).unwrap()),
        "31339602006436800ad500640ad50065"
    );
    assert_eq!(
        hex::encode(two.encode(A, GROUP, ChecksumKind::MessageOnly).unwrap()),
        "31339602006421f30ad500640ad50065"
    );
}

#[test]
fn receive_checks_refuse_bad_packets() {
    let good = ip_packet(CAPTURED[0].5);
    let mut ttl = good.clone();
    ttl[8] = 64;
    assert_eq!(packet::decode_ipv4(&ttl), Err(DecodeError::WrongTtl(64)));
    let mut proto = good.clone();
    proto[9] = 6;
    assert_eq!(packet::decode_ipv4(&proto), Err(DecodeError::NotVrrp(6)));
    let vrrp = &good[20..];
    let mut version = vrrp.to_vec();
    version[0] = 0x41;
    assert_eq!(
        Advert::decode(&version, A, GROUP),
        Err(DecodeError::WrongVersion(4))
    );
    let mut kind = vrrp.to_vec();
    kind[0] = 0x32;
    assert_eq!(
        Advert::decode(&kind, A, GROUP),
        Err(DecodeError::WrongType(2))
    );
    let mut count = vrrp.to_vec();
    count[3] = 2;
    assert!(matches!(
        Advert::decode(&count, A, GROUP),
        Err(DecodeError::WrongLength { .. })
    ));
    let mut sum = vrrp.to_vec();
    sum[7] ^= 1;
    assert_eq!(
        Advert::decode(&sum, A, GROUP),
        Err(DecodeError::BadChecksum)
    );
    // The pseudo-header binds the addresses: from another source it fails.
    assert_eq!(
        Advert::decode(vrrp, B, GROUP),
        Err(DecodeError::BadChecksum)
    );
    assert!(matches!(
        Advert::decode(&vrrp[..5], A, GROUP),
        Err(DecodeError::TooShort { .. })
    ));
}

fn advert() -> impl Strategy<Value = (Advert, ChecksumKind)> {
    (
        any::<bool>(),
        1u8..=255,
        any::<u8>(),
        1u16..=0x0fff,
        proptest::collection::vec(any::<u32>().prop_map(Ipv4Addr::from), 1..8),
        any::<bool>(),
    )
        .prop_map(|(v3, vrid, priority, interval, addresses, pseudo)| {
            let version = if v3 { Version::V3 } else { Version::V2 };
            let interval_cs = if v3 {
                interval
            } else {
                (interval % 255 + 1) * 100
            };
            let kind = if v3 && pseudo {
                ChecksumKind::PseudoHeader
            } else {
                ChecksumKind::MessageOnly
            };
            (
                Advert {
                    version,
                    vrid,
                    priority,
                    interval_cs,
                    addresses,
                },
                kind,
            )
        })
}

proptest! {
    #[test]
    // Sources from a fixed set: for about one source address in 65,535 the
    // pseudo-header sums to zero and both checksum forms verify, which
    // would make the reported form ambiguous.
    fn round_trip(
        (advert, kind) in advert(),
        src in prop_oneof![Just(A), Just(B), Just(Ipv4Addr::new(192, 168, 7, 1)), Just(Ipv4Addr::new(172, 16, 0, 9))],
    ) {
        let bytes = advert.encode(src, GROUP, kind).unwrap();
        let (back, got) = Advert::decode(&bytes, src, GROUP).unwrap();
        prop_assert_eq!(back, advert);
        prop_assert_eq!(got, kind);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
        let _ = packet::decode_ipv4(&bytes);
        let _ = Advert::decode(&bytes, A, GROUP);
    }

    #[test]
    fn corrupted_captures_never_panic(i in 0usize..12, pos in 0usize..48, byte in any::<u8>()) {
        let mut p = ip_packet(CAPTURED[i].5);
        if let Some(b) = p.get_mut(pos) {
            *b = byte;
        }
        let _ = packet::decode_ipv4(&p);
    }
}

#[test]
fn gratuitous_arp_matches_the_captured_frame() {
    let captured =
        "ffffffffffff02130000000b0806000108000604000102130000000b0ad50064ffffffffffff0ad50064";
    let frame = packet::gratuitous_arp([0x02, 0x13, 0, 0, 0, 0x0b], VIP);
    assert_eq!(hex::encode(frame), captured);
}
