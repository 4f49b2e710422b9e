//! RFC 7606 error handling outcomes for UPDATE messages.

use super::family::Family;
use super::message::Update;
use super::notification::Notification;

/// What the session must do with a received UPDATE (RFC 7606 §2).
///
/// Several errors in one UPDATE combine to the strongest (§3 h), in the
/// order `SessionReset > AfiSafiDisable > TreatAsWithdraw > IgnoreRoutes >
/// AttributeDiscard > Accept` ([`Disposition::severity`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Well-formed: apply the UPDATE.
    Accept,
    /// Some malformed or misplaced attributes were dropped (they are absent
    /// from the decoded attributes); apply the rest of the UPDATE.
    AttributeDiscard,
    /// The next hop is semantically invalid (RFC 4271 §6.3): process the
    /// withdrawals but ignore the announced routes, without any error.
    IgnoreRoutes,
    /// Withdraw every prefix the UPDATE announces or withdraws
    /// ([`Update::all_prefixes`]), as if it were a withdrawal.
    TreatAsWithdraw,
    /// Stop exchanging `family` with the peer and drop its routes of that
    /// family (RFC 4760 §7). A speaker that does not implement per-family
    /// disabling sends `notification` and resets the session instead.
    AfiSafiDisable {
        /// The family to disable.
        family: Family,
        /// The NOTIFICATION to send if resetting instead.
        notification: Notification,
    },
    /// Send `notification` and close the session.
    SessionReset(Notification),
}

/// The class of a [`Disposition`], without its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DispositionClass {
    /// [`Disposition::Accept`].
    Accept,
    /// [`Disposition::AttributeDiscard`].
    AttributeDiscard,
    /// [`Disposition::IgnoreRoutes`].
    IgnoreRoutes,
    /// [`Disposition::TreatAsWithdraw`].
    TreatAsWithdraw,
    /// [`Disposition::AfiSafiDisable`].
    AfiSafiDisable,
    /// [`Disposition::SessionReset`].
    SessionReset,
}

impl Disposition {
    /// The class (ordered by strength).
    pub fn class(&self) -> DispositionClass {
        match self {
            Disposition::Accept => DispositionClass::Accept,
            Disposition::AttributeDiscard => DispositionClass::AttributeDiscard,
            Disposition::IgnoreRoutes => DispositionClass::IgnoreRoutes,
            Disposition::TreatAsWithdraw => DispositionClass::TreatAsWithdraw,
            Disposition::AfiSafiDisable { .. } => DispositionClass::AfiSafiDisable,
            Disposition::SessionReset(_) => DispositionClass::SessionReset,
        }
    }

    /// Strength for combining: higher wins.
    pub fn severity(&self) -> u8 {
        self.class() as u8
    }

    /// Keep the stronger of `self` and `other` (the earlier one on a tie,
    /// so the first reset's NOTIFICATION is the one sent).
    pub fn combine(&mut self, other: Disposition) {
        if other.severity() > self.severity() {
            *self = other;
        }
    }
}

/// One problem found while decoding an UPDATE, for logs and counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpdateFault {
    /// The attribute type code concerned, if the fault is in an attribute.
    pub type_code: Option<u8>,
    /// What was wrong.
    pub reason: &'static str,
    /// What RFC 7606 says to do about this fault alone.
    pub action: DispositionClass,
}

/// The result of decoding an UPDATE: what could be parsed, and what to do.
///
/// With [`Disposition::SessionReset`] the update holds whatever was parsed
/// before the fatal error and must not be applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedUpdate {
    /// The parsed UPDATE (malformed attributes removed).
    pub update: Update,
    /// The combined disposition.
    pub disposition: Disposition,
    /// The individual faults (at most [`MAX_FAULTS`] are kept).
    pub faults: Vec<UpdateFault>,
}

/// Cap on recorded faults per UPDATE, so hostile input cannot make the
/// fault list large.
pub const MAX_FAULTS: usize = 16;
