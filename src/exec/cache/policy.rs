//! The write policy: what every value write respects, whatever the topology — stale-set protection on or off, and
//! with `[ha]` the fence whose token (one node) or epoch (a cluster's slots) a value write must carry.
//!
//! Set once: protection at connect (`[redis] stale_set_protection`), the fence by [`super::Cache::fenced`]. The
//! topologies take it as an argument to each write instead of keeping copies of their own.

use std::sync::Arc;

use super::{CacheError, Fence, VERSION_KEY};

/// Protection and fence, as one value passed to every write.
#[derive(Clone, Default)]
pub(super) struct WritePolicy {
    /// Whether stale-set protection is on.
    pub protected: bool,
    /// With `[ha]`: the lease every value write must still hold.
    pub fence: Option<Arc<Fence>>,
}

impl WritePolicy {
    /// The fence key and token a value-writing script checks on one node. Without `[ha]` the token is empty (no
    /// check) and the key is the version counter, which the Redis user may touch anyway (an ACL checks every
    /// declared key). [`CacheError::Fenced`] when this instance may not write.
    pub(super) fn token(&self) -> Result<(String, String), CacheError> {
        match &self.fence {
            None => Ok((VERSION_KEY.to_string(), String::new())),
            Some(fence) => match fence.token() {
                Some(token) => Ok((fence.key().to_string(), token.to_string())),
                None => Err(CacheError::Fenced),
            },
        }
    }

    /// The epoch a value write carries on a cluster: "" without `[ha]` (no check); [`CacheError::Fenced`] when this
    /// instance may not write.
    pub(super) fn epoch(&self) -> Result<String, CacheError> {
        match &self.fence {
            None => Ok(String::new()),
            Some(fence) => fence
                .held()
                .map(|(_, epoch)| epoch.to_string())
                .ok_or(CacheError::Fenced),
        }
    }

    /// The `[ha]` lease key the fence follows ("" without `[ha]`).
    pub(super) fn lease_key(&self) -> &str {
        self.fence.as_ref().map_or("", |fence| fence.key())
    }
}
