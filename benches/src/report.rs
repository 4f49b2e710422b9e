//! Rendering results as Markdown and keeping `docs/performance.md` current:
//! each benchmark owns one section between markers, replaced on every run, so
//! running one benchmark leaves the others' tables alone.

use crate::figure::{Figure, fmt_value};

/// Facts about the run printed under each table.
#[derive(Debug, Clone)]
pub struct RunInfo {
    pub date: String,
    pub machine: String,
}

impl RunInfo {
    /// Today's date (UTC) and the machine's cores and kernel.
    pub fn current() -> RunInfo {
        let date = std::process::Command::new("date")
            .args(["-u", "+%Y-%m-%d"])
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        RunInfo {
            date,
            machine: format!("{cores} cores, Linux {}", kernel.trim()),
        }
    }
}

fn begin(name: &str) -> String {
    format!("<!-- bench:{name} begin -->")
}

fn end(name: &str) -> String {
    format!("<!-- bench:{name} end -->")
}

/// The Markdown section for one benchmark's figures.
pub fn section(name: &str, about: &str, figures: &[Figure], info: &RunInfo) -> String {
    let mut s = String::new();
    s.push_str(&begin(name));
    s.push('\n');
    s.push_str(&format!("### `{name}`: {about}\n\n"));
    s.push_str(&format!(
        "Measured {} on {} with `make bench BENCH={name}`.\n\n",
        info.date, info.machine
    ));
    s.push_str("| figure | measured | comparator (same run) | ratio | goal | met |\n");
    s.push_str("|---|---|---|---|---|---|\n");
    for f in figures {
        let met = match f.goal_met() {
            None => "—",
            Some(true) => "yes",
            Some(false) => "**no**",
        };
        s.push_str(&format!(
            "| {} | {} {} ({}) | {} {} ({}) | {:.3} | {} | {} |\n",
            f.metric,
            fmt_value(f.subject.value),
            f.subject.unit,
            f.subject.label,
            fmt_value(f.comparator.value),
            f.comparator.unit,
            f.comparator.label,
            f.ratio(),
            f.goal_text(),
            met
        ));
    }
    s.push_str(&end(name));
    s
}

/// Replaces the section of benchmark `name` in `doc` (appending it when the
/// document has none yet).
pub fn splice(doc: &str, name: &str, section: &str) -> String {
    let (b, e) = (begin(name), end(name));
    match (doc.find(&b), doc.find(&e)) {
        (Some(start), Some(stop)) if stop > start => {
            format!("{}{}{}", &doc[..start], section, &doc[stop + e.len()..])
        }
        _ => {
            let mut out = doc.trim_end().to_string();
            out.push_str("\n\n");
            out.push_str(section);
            out.push('\n');
            out
        }
    }
}

/// A plain-text table for the terminal.
pub fn terminal(name: &str, figures: &[Figure]) -> String {
    let mut s = format!("== {name}\n");
    for f in figures {
        s.push_str(&format!(
            "  {:<48} {:>12} {:<8} vs {:>12} {:<8} ratio {:>7.3}  goal {} {}\n",
            f.metric,
            fmt_value(f.subject.value),
            f.subject.unit,
            fmt_value(f.comparator.value),
            f.comparator.unit,
            f.ratio(),
            f.goal_text(),
            match f.goal_met() {
                None => "",
                Some(true) => "(met)",
                Some(false) => "(NOT met)",
            }
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::figure::{Better, Goal, Measure};

    fn info() -> RunInfo {
        RunInfo {
            date: "2026-11-22".into(),
            machine: "2 cores".into(),
        }
    }

    #[test]
    fn splice_replaces_only_its_own_section() {
        let figs = [Figure::new(
            "throughput",
            Measure::new("pods", 9.0, "Gbit/s"),
            Measure::new("nodes", 10.0, "Gbit/s"),
            Better::Higher,
        )
        .with_goal(Goal::Ratio(0.97))];
        let a1 = section("a", "first", &figs, &info());
        let b1 = section("b", "second", &figs, &info());
        let doc = splice(&splice("# Performance\n", "a", &a1), "b", &b1);
        assert!(doc.contains("### `a`") && doc.contains("### `b`"));
        assert!(doc.contains("| 0.900 | ≥ 0.97× | **no** |"), "{doc}");

        let a2 = section("a", "first, again", &figs, &info());
        let doc2 = splice(&doc, "a", &a2);
        assert!(doc2.contains("first, again") && !doc2.contains("`a`: first\n"));
        assert!(doc2.contains("### `b`: second"));
        assert_eq!(doc2.matches("bench:a begin").count(), 1);
    }
}
