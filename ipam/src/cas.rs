//! Read-modify-write of one object as a compare-and-swap loop: apply an edit
//! to the object as last read, write it conditionally on its
//! `resourceVersion`, and on a conflict re-read the fresh object and apply the
//! edit again. The edit decides from the fresh state each time, so a retry
//! never writes a decision made on stale data.

use crate::error::IpamError;
use crate::store::{IpamStore, StoredKind};

/// Attempts before giving up on one object (each lost one means another
/// writer made progress, so this bounds only pathological contention).
pub const MAX_CAS_ATTEMPTS: u32 = 64;

/// What an edit wants.
pub(crate) enum Edit<T> {
    /// The object was changed in place: write it, then return `T`.
    Write(T),
    /// Nothing to write: return `T`.
    Leave(T),
}

/// What happened.
pub(crate) enum Outcome<K, T> {
    Written(K, T),
    Left(K, T),
    /// The object does not exist (or vanished between attempts).
    Missing,
}

/// Run `edit` against object `name` until a conditional write succeeds or the
/// edit declines. `current` is an already-read copy to start from (saves a
/// read in the common case).
pub(crate) async fn modify<S, K, T, F>(
    store: &S,
    name: &str,
    mut current: Option<K>,
    mut edit: F,
) -> Result<Outcome<K, T>, IpamError>
where
    S: IpamStore,
    K: StoredKind,
    F: FnMut(&mut K) -> Result<Edit<T>, IpamError>,
{
    for _ in 0..MAX_CAS_ATTEMPTS {
        let mut obj = match current.take() {
            Some(o) => o,
            None => match store.get::<K>(name).await? {
                Some(o) => o,
                None => return Ok(Outcome::Missing),
            },
        };
        match edit(&mut obj)? {
            Edit::Leave(t) => return Ok(Outcome::Left(obj, t)),
            Edit::Write(t) => match store.replace(&obj).await {
                Ok(stored) => return Ok(Outcome::Written(stored, t)),
                Err(e) if e.is_race() => continue,
                Err(e) => return Err(e.into()),
            },
        }
    }
    Err(IpamError::Contention {
        what: format!("{} {name:?}", K::kind(&())),
        attempts: MAX_CAS_ATTEMPTS,
    })
}
