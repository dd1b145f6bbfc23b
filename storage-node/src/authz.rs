//! Who may call which internal RPC. Every internal connection is mutual
//! TLS ([`rondo_proto::mtls`]): the caller's certificate, issued by the
//! cluster CA, names a node (by id) or a gateway. Each handler states whom
//! it serves ([`Allowed`]) and calls [`authorize`] before it reads its
//! request.
//!
//! - Members (nodes of the current layout, this one included): snapshots,
//!   blob copies, pushes and reads. A node removed from the layout is
//!   refused, although its certificate is still valid.
//! - Any node: the ring's messages (`Deliver`, `Ping`), each from the node
//!   it names. A removed node that missed the entry of its removal learns
//!   it from the members' answers and retires; the ring core, not this
//!   check, keeps it out of the ring (it counts only the layout's voters).
//!   And `Join`, for the node the certificate names (`auto_join`): a
//!   removed node whose data directory was wiped can be added again this
//!   way, unless the members set `[ring] refuse_joins` (SECURITY.md).
//! - Gateways: writes on behalf of users (`Propose`, `UploadSong`,
//!   `DeleteSong`), layout changes and the catalog change stream.
//! - Anyone with a cluster certificate: `Health` (a joining node asks a
//!   seed for the layout before it is a member).

use rondo_core::NodeId;
use rondo_core::tls::Identity;

use crate::error::Error;
use crate::ring::RingHandle;

/// The callers an RPC serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Allowed {
    /// Any certificate of the cluster CA.
    Anyone,
    /// Nodes of the current layout.
    Members,
    /// Any node of the cluster CA, in the layout or not.
    Nodes,
    /// Gateways.
    Gateways,
    /// Gateways and nodes of the current layout.
    GatewaysAndMembers,
}

/// The caller of `request` if it may call `rpc`; otherwise the refusal:
/// `Unauthenticated` without a cluster certificate, `PermissionDenied` for
/// the wrong role or a node outside the layout.
pub fn authorize<T>(
    ring: &RingHandle,
    me: NodeId,
    request: &tonic::Request<T>,
    rpc: &'static str,
    allowed: Allowed,
) -> Result<Identity, tonic::Status> {
    let Some(caller) = rondo_proto::mtls::caller(request) else {
        return Err(tonic::Status::unauthenticated(format!(
            "{rpc} needs a client certificate of the cluster CA"
        )));
    };
    let member = |id: NodeId| id == me || ring.peers().contains_key(&id);
    let ok = match (allowed, caller) {
        (Allowed::Anyone, _) | (Allowed::Nodes, Identity::Node(_)) => true,
        (Allowed::Gateways | Allowed::GatewaysAndMembers, Identity::Gateway(_)) => true,
        (Allowed::Members | Allowed::GatewaysAndMembers, Identity::Node(id)) => {
            if !member(id) {
                return Err(Error::NotAllowed(format!(
                    "{rpc}: node {id} is not in this node's layout"
                ))
                .into());
            }
            true
        }
        _ => false,
    };
    if ok {
        Ok(caller)
    } else {
        let whom = match allowed {
            Allowed::Members | Allowed::Nodes => "storage nodes",
            Allowed::Gateways => "gateways",
            Allowed::GatewaysAndMembers | Allowed::Anyone => "gateways and storage nodes",
        };
        Err(Error::NotAllowed(format!("{rpc} is for {whom}, not for {caller}")).into())
    }
}
