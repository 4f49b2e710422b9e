//! What a benchmark reports: figures, each a measurement set against a
//! comparator measured in the same run (the machine is shared and noisy, so
//! only ratios mean anything across runs).

use serde::Serialize;

/// One measured quantity.
#[derive(Debug, Clone, Serialize)]
pub struct Measure {
    /// What was measured, e.g. "margay-bgpd" or "hand-wired pods".
    pub label: String,
    pub value: f64,
    /// Unit of `value`, e.g. "Gbit/s", "ms", "bytes".
    pub unit: String,
}

impl Measure {
    pub fn new(label: impl Into<String>, value: f64, unit: impl Into<String>) -> Measure {
        Measure {
            label: label.into(),
            value,
            unit: unit.into(),
        }
    }
}

/// Which direction is an improvement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Better {
    Higher,
    Lower,
}

/// A target from the issue that set the figure.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Goal {
    /// On the ratio subject / comparator (e.g. ≥ 0.97).
    Ratio(f64),
    /// On the subject's own value, in its unit (e.g. p99 < 60 ms).
    Absolute(f64),
}

/// A figure: subject against comparator.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub metric: String,
    pub subject: Measure,
    pub comparator: Measure,
    pub better: Better,
    pub goal: Option<Goal>,
}

impl Figure {
    pub fn new(
        metric: impl Into<String>,
        subject: Measure,
        comparator: Measure,
        better: Better,
    ) -> Figure {
        Figure {
            metric: metric.into(),
            subject,
            comparator,
            better,
            goal: None,
        }
    }

    pub fn with_goal(mut self, goal: Goal) -> Figure {
        self.goal = Some(goal);
        self
    }

    /// subject ÷ comparator.
    pub fn ratio(&self) -> f64 {
        self.subject.value / self.comparator.value
    }

    /// Whether the goal is met (None when there is no goal).
    pub fn goal_met(&self) -> Option<bool> {
        let (value, limit) = match self.goal? {
            Goal::Ratio(limit) => (self.ratio(), limit),
            Goal::Absolute(limit) => (self.subject.value, limit),
        };
        Some(match self.better {
            Better::Higher => value >= limit,
            Better::Lower => value <= limit,
        })
    }

    /// The goal as a person reads it: "≥ 0.97×", "≤ 60 ms".
    pub fn goal_text(&self) -> String {
        let op = match self.better {
            Better::Higher => "≥",
            Better::Lower => "≤",
        };
        match self.goal {
            None => "—".into(),
            Some(Goal::Ratio(r)) => format!("{op} {r}×"),
            Some(Goal::Absolute(v)) => format!("{op} {} {}", fmt_value(v), self.subject.unit),
        }
    }
}

/// A value with a sensible number of significant digits.
pub fn fmt_value(v: f64) -> String {
    let a = v.abs();
    if a >= 1000.0 || v == v.trunc() && a < 1e15 {
        format!("{v:.0}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// Median of samples (the runner's default way to tame noise).
pub fn median(samples: &mut [f64]) -> f64 {
    assert!(!samples.is_empty(), "median of no samples");
    samples.sort_by(f64::total_cmp);
    let mid = samples.len() / 2;
    if samples.len() % 2 == 1 {
        samples[mid]
    } else {
        (samples[mid - 1] + samples[mid]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fig(subject: f64, comparator: f64, better: Better, goal: Goal) -> Figure {
        Figure::new(
            "m",
            Measure::new("a", subject, "ms"),
            Measure::new("b", comparator, "ms"),
            better,
        )
        .with_goal(goal)
    }

    #[test]
    fn goals_follow_the_direction_of_improvement() {
        assert_eq!(
            fig(97.0, 100.0, Better::Higher, Goal::Ratio(0.97)).goal_met(),
            Some(true)
        );
        assert_eq!(
            fig(96.0, 100.0, Better::Higher, Goal::Ratio(0.97)).goal_met(),
            Some(false)
        );
        assert_eq!(
            fig(50.0, 10.0, Better::Lower, Goal::Absolute(60.0)).goal_met(),
            Some(true)
        );
        assert_eq!(
            fig(61.0, 10.0, Better::Lower, Goal::Absolute(60.0)).goal_met(),
            Some(false)
        );
        assert_eq!(
            fig(61.0, 10.0, Better::Lower, Goal::Absolute(60.0)).goal_text(),
            "≤ 60 ms"
        );
    }

    #[test]
    fn median_of_odd_and_even_samples() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
