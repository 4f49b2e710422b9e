//! Leader election over a `coordination.k8s.io` Lease, the decision part:
//! given the Lease as read, what this candidate does next. The effects (the
//! compare-and-swap writes) are in [`crate::ipam_gc`].

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use std::time::Duration;

/// The Lease as far as the election cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseState {
    pub holder: Option<String>,
    pub renewed_at: Option<Timestamp>,
    pub duration: Duration,
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseStep {
    /// No Lease yet: create it, holding it.
    Create,
    /// Ours: renew it.
    Renew,
    /// Unheld or expired: take it over (a compare-and-swap; one candidate wins).
    TakeOver,
    /// Someone else holds it and it is fresh.
    Follow { leader: String },
}

pub fn step(current: Option<&LeaseState>, me: &str, now: Timestamp) -> LeaseStep {
    let Some(l) = current else {
        return LeaseStep::Create;
    };
    let holder = l.holder.as_deref().filter(|h| !h.is_empty());
    match holder {
        Some(h) if h == me => LeaseStep::Renew,
        None => LeaseStep::TakeOver,
        Some(h) => {
            let span = SignedDuration::try_from(l.duration).unwrap_or(SignedDuration::MAX);
            let expired = match l.renewed_at {
                None => true,
                Some(t) => t
                    .checked_add(span)
                    .map(|deadline| deadline < now)
                    .unwrap_or(false),
            };
            if expired {
                LeaseStep::TakeOver
            } else {
                LeaseStep::Follow {
                    leader: h.to_string(),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn lease(holder: Option<&str>, renewed: Option<i64>) -> LeaseState {
        LeaseState {
            holder: holder.map(str::to_string),
            renewed_at: renewed.map(at),
            duration: Duration::from_secs(30),
        }
    }

    #[test]
    fn create_renew_follow_and_take_over() {
        assert_eq!(step(None, "n1", at(0)), LeaseStep::Create);
        assert_eq!(
            step(Some(&lease(Some("n1"), Some(0))), "n1", at(100)),
            LeaseStep::Renew
        );
        assert_eq!(
            step(Some(&lease(Some("n2"), Some(0))), "n1", at(29)),
            LeaseStep::Follow {
                leader: "n2".into()
            }
        );
        assert_eq!(
            step(Some(&lease(Some("n2"), Some(0))), "n1", at(31)),
            LeaseStep::TakeOver
        );
        assert_eq!(
            step(Some(&lease(None, Some(0))), "n1", at(1)),
            LeaseStep::TakeOver
        );
        assert_eq!(
            step(Some(&lease(Some(""), None)), "n1", at(1)),
            LeaseStep::TakeOver
        );
        assert_eq!(
            step(Some(&lease(Some("n2"), None)), "n1", at(1)),
            LeaseStep::TakeOver
        );
    }
}
