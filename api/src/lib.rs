//! Margay's resource model: the `margay.dev/v1` kinds, label and Calico-style
//! selectors, and validation with errors that name the object and field.
//!
//! Empty so far; the resource model issue fills it.
