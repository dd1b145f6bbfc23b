//! UUID-named resources.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Error;

macro_rules! uuid_id {
    ($(#[$meta:meta])* $name:ident, $kind:literal) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A fresh random (v4) id.
            pub fn new_random() -> Self {
                Self(Uuid::new_v4())
            }

            /// The id's 16 bytes, for use as a storage key.
            pub fn as_bytes(&self) -> &[u8; 16] {
                self.0.as_bytes()
            }

            /// Rebuilds an id from its 16 bytes.
            pub fn from_bytes(bytes: [u8; 16]) -> Self {
                Self(Uuid::from_bytes(bytes))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s.trim()).map(Self).map_err(|_| Error::InvalidId {
                    kind: $kind,
                    value: s.chars().take(64).collect(),
                })
            }
        }
    };
}

uuid_id!(
    /// A song.
    SongId,
    "song"
);
uuid_id!(
    /// An artist.
    ArtistId,
    "artist"
);
uuid_id!(
    /// An album.
    AlbumId,
    "album"
);
uuid_id!(
    /// A storage node.
    NodeId,
    "node"
);
uuid_id!(
    /// An account.
    UserId,
    "user"
);
uuid_id!(
    /// A playlist.
    PlaylistId,
    "playlist"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let id = SongId::new_random();
        assert_eq!(id.to_string().parse::<SongId>(), Ok(id));
        assert_eq!(SongId::from_bytes(*id.as_bytes()), id);
        let err = "not-a-uuid".parse::<AlbumId>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid album id \"not-a-uuid\": expected a UUID"
        );
    }
}
