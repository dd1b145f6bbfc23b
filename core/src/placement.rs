//! Placement of blobs on storage nodes by rendezvous (highest random weight)
//! hashing.
//!
//! Each node's score for a blob is the BLAKE3 hash of the content hash and the
//! node id; the blob lives on the `r` nodes with the highest scores. Adding or
//! removing a node moves only the blobs whose top-`r` set it enters or
//! leaves. The function is stable across builds and platforms (no std
//! `DefaultHasher`).

use crate::{ContentHash, NodeId};

fn score(hash: &ContentHash, node: &NodeId) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"rondo-placement-v1");
    h.update(hash.as_bytes());
    h.update(node.as_bytes());
    *h.finalize().as_bytes()
}

/// The nodes that should hold `hash`, best first, at most `r` of them.
pub fn place(hash: &ContentHash, nodes: &[NodeId], r: usize) -> Vec<NodeId> {
    let mut scored: Vec<([u8; 32], NodeId)> = nodes.iter().map(|n| (score(hash, n), *n)).collect();
    scored.sort_by(|a, b| b.cmp(a));
    scored.dedup_by_key(|(_, n)| *n);
    scored.into_iter().take(r).map(|(_, n)| n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_bounded_and_minimal_movement() {
        let nodes: Vec<NodeId> = (0..5u8).map(|i| NodeId::from_bytes([i; 16])).collect();
        let hash = ContentHash::of(b"song");
        let a = place(&hash, &nodes, 3);
        assert_eq!(a, place(&hash, &nodes, 3));
        assert_eq!(a.len(), 3);
        assert_eq!(place(&hash, &nodes, 10).len(), 5);
        // Removing a node that is not chosen changes nothing.
        let unchosen: Vec<NodeId> = nodes.iter().copied().filter(|n| !a.contains(n)).collect();
        let fewer: Vec<NodeId> = nodes
            .iter()
            .copied()
            .filter(|n| *n != unchosen[0])
            .collect();
        assert_eq!(place(&hash, &fewer, 3), a);
        // Spread: over many blobs every node is first sometimes.
        let mut firsts = std::collections::HashSet::new();
        for i in 0..200u32 {
            firsts.insert(place(&ContentHash::of(&i.to_le_bytes()), &nodes, 1)[0]);
        }
        assert_eq!(firsts.len(), 5);
    }
}
