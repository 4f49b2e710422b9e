//! Placeholder for the benchmark runner; the foundation issue fills it in.
fn main() {}
