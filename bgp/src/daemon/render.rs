//! Human-readable tables for `margay-bgpd --control SOCK peers|routes`.

use std::fmt::Write as _;

use crate::rib::RouteView;
use crate::status::PeerStatus;

fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &mut dyn Iterator<Item = &str>| {
        let cells: Vec<&str> = cells.collect();
        let last = cells.len().saturating_sub(1);
        for (i, c) in cells.iter().enumerate() {
            if i == last {
                let _ = write!(out, "{c}");
            } else {
                let _ = write!(out, "{c:<w$}  ", w = widths[i]);
            }
        }
        out.push('\n');
    };
    line(&mut out, &mut header.iter().copied());
    for r in rows {
        line(&mut out, &mut r.iter().map(String::as_str));
    }
    out
}

fn duration(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// The `peers` table.
pub fn peers(peers: &[PeerStatus]) -> String {
    let rows: Vec<Vec<String>> = peers
        .iter()
        .map(|p| {
            let c = &p.prefixes;
            vec![
                p.address.to_string(),
                p.asn.to_string(),
                if p.ebgp { "eBGP" } else { "iBGP" }.to_string()
                    + if p.route_reflector_client {
                        " rr-client"
                    } else {
                        ""
                    },
                p.state.to_string(),
                duration(p.seconds_in_state),
                format!(
                    "{}/{}/{}",
                    c.received[0] + c.received[1],
                    c.accepted[0] + c.accepted[1],
                    c.advertised[0] + c.advertised[1]
                ),
                // The last error explains a session that is not up.
                if p.state == crate::fsm::State::Established {
                    String::new()
                } else {
                    p.last_error.clone().unwrap_or_default()
                },
            ]
        })
        .collect();
    table(
        &[
            "PEER",
            "AS",
            "TYPE",
            "STATE",
            "SINCE",
            "RCVD/ACC/ADV",
            "INFO",
        ],
        &rows,
    )
}

/// The `routes` table.
pub fn routes(routes: &[RouteView]) -> String {
    let rows: Vec<Vec<String>> = routes
        .iter()
        .map(|r| {
            let mut flags = Vec::new();
            if r.best {
                flags.push("best".to_string());
            }
            if r.multipath && !r.best {
                flags.push("multipath".to_string());
            }
            if r.stale {
                flags.push("stale".to_string());
            }
            if let Some(why) = r.rejected {
                flags.push(format!("rejected:{why:?}"));
            }
            vec![
                r.prefix.to_string(),
                r.next_hop.map_or("self".to_string(), |n| n.to_string()),
                r.peer.map_or("local".to_string(), |p| p.to_string()),
                r.local_pref.map_or("-".to_string(), |l| l.to_string()),
                if r.as_path.is_empty() {
                    "-".to_string()
                } else {
                    r.as_path.clone()
                },
                flags.join(","),
            ]
        })
        .collect();
    table(
        &["PREFIX", "NEXT HOP", "PEER", "LOCPRF", "AS PATH", "FLAGS"],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up() {
        let t = table(
            &["A", "BB"],
            &[
                vec!["long-cell".into(), "x".into()],
                vec!["y".into(), "z".into()],
            ],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "A          BB");
        assert_eq!(lines[1], "long-cell  x");
        assert_eq!(lines[2], "y          z");
        assert_eq!(duration(59), "59s");
        assert_eq!(duration(3600), "60m");
    }
}
