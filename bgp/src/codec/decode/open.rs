//! OPEN decoding (RFC 4271 §4.2, §6.2; RFC 5492; RFC 9072) and the checks
//! of a received OPEN against our configuration (RFC 6286, RFC 7607).

use std::net::Ipv4Addr;

use crate::codec::capabilities::{
    Capabilities, GracefulRestart, GracefulRestartFamily, RawCapability, code,
};
use crate::codec::context::OpenCheck;
use crate::codec::family::{Afi, Family, Safi};
use crate::codec::message::{BGP_VERSION, Open};
use crate::codec::notification::{Notification, NotificationCode, OpenSubcode};
use crate::codec::reader::Reader;

/// Optional parameter type carrying capabilities (RFC 5492).
const PARAM_CAPABILITIES: u8 = 2;
/// RFC 9072: non-extended length 255 and type 255 announce extended params.
const PARAM_EXTENDED: u8 = 255;

fn open_error(subcode: OpenSubcode, data: Vec<u8>) -> Notification {
    Notification::new(NotificationCode::Open(subcode), data)
}

fn malformed() -> Notification {
    open_error(OpenSubcode::Unspecific, Vec::new())
}

/// Decodes an OPEN body and checks it against `check`: the NOTIFICATION to
/// send on any error.
pub fn decode_open(body: &[u8], check: &OpenCheck) -> Result<Open, Notification> {
    let open = parse_open(body)?;
    validate_open(&open, check)?;
    Ok(open)
}

/// Decodes an OPEN body without checking it against our configuration
/// (structure, version and capability syntax only).
pub fn parse_open(body: &[u8]) -> Result<Open, Notification> {
    let mut r = Reader::new(body);
    let version = r.u8().ok_or_else(malformed)?;
    if version != BGP_VERSION {
        return Err(open_error(
            OpenSubcode::UnsupportedVersionNumber,
            u16::from(BGP_VERSION).to_be_bytes().to_vec(),
        ));
    }
    let my_as = r.u16().ok_or_else(malformed)?;
    let hold_time = r.u16().ok_or_else(malformed)?;
    let bgp_id = Ipv4Addr::from(r.u32().ok_or_else(malformed)?);
    let opt_len = r.u8().ok_or_else(malformed)?;

    let mut capabilities = Capabilities::default();
    let extended = opt_len == 255 && r.rest().first() == Some(&PARAM_EXTENDED);
    let params = if extended {
        r.u8();
        let len = r.u16().ok_or_else(malformed)?;
        r.take(usize::from(len)).ok_or_else(malformed)?
    } else {
        r.take(usize::from(opt_len)).ok_or_else(malformed)?
    };
    if !r.is_empty() {
        // Octets after the optional parameters: the lengths disagree.
        return Err(malformed());
    }
    let mut p = Reader::new(params);
    while !p.is_empty() {
        let kind = p.u8().ok_or_else(malformed)?;
        let len = if extended {
            p.u16()
        } else {
            p.u8().map(u16::from)
        }
        .ok_or_else(malformed)?;
        let value = p.take(usize::from(len)).ok_or_else(malformed)?;
        if kind != PARAM_CAPABILITIES {
            return Err(open_error(
                OpenSubcode::UnsupportedOptionalParameter,
                Vec::new(),
            ));
        }
        parse_capabilities(value, &mut capabilities)?;
    }
    Ok(Open {
        my_as,
        hold_time,
        bgp_id,
        capabilities,
    })
}

fn parse_capabilities(value: &[u8], caps: &mut Capabilities) -> Result<(), Notification> {
    let mut r = Reader::new(value);
    while !r.is_empty() {
        let code = r.u8().ok_or_else(malformed)?;
        let len = r.u8().ok_or_else(malformed)?;
        let v = r.take(usize::from(len)).ok_or_else(malformed)?;
        match code {
            code::MULTIPROTOCOL => {
                let [a0, a1, _reserved, safi] = *v else {
                    return Err(malformed());
                };
                let family = Family::new(Afi(u16::from_be_bytes([a0, a1])), Safi(safi));
                if !caps.multiprotocol.contains(&family) {
                    caps.multiprotocol.push(family);
                }
            }
            // Route refresh capabilities have no value; one sent anyway is
            // harmless and ignored.
            code::ROUTE_REFRESH => caps.route_refresh = true,
            code::ENHANCED_ROUTE_REFRESH => caps.enhanced_route_refresh = true,
            code::FOUR_OCTET_AS => {
                let [a, b, c, d] = *v else {
                    return Err(malformed());
                };
                let asn = u32::from_be_bytes([a, b, c, d]);
                if asn == 0 {
                    // RFC 7607 §2.
                    return Err(open_error(OpenSubcode::BadPeerAs, Vec::new()));
                }
                caps.four_octet_as.get_or_insert(asn);
            }
            code::GRACEFUL_RESTART => {
                let gr = parse_graceful_restart(v)?;
                caps.graceful_restart.get_or_insert(gr);
            }
            _ => caps.unknown.push(RawCapability {
                code,
                value: v.to_vec(),
            }),
        }
    }
    Ok(())
}

fn parse_graceful_restart(v: &[u8]) -> Result<GracefulRestart, Notification> {
    let mut r = Reader::new(v);
    let head = r.u16().ok_or_else(malformed)?;
    if !r.remaining().is_multiple_of(4) {
        return Err(malformed());
    }
    let mut families = Vec::with_capacity(r.remaining() / 4);
    while let (Some(afi), Some(safi), Some(flags)) = (r.u16(), r.u8(), r.u8()) {
        families.push(GracefulRestartFamily {
            family: Family::new(Afi(afi), Safi(safi)),
            forwarding_state: flags & 0x80 != 0,
        });
    }
    Ok(GracefulRestart {
        restart_state: head & 0x8000 != 0,
        notification: head & 0x4000 != 0,
        restart_time: head & 0x0fff,
        families,
    })
}

/// Checks a decoded OPEN against our configuration.
pub fn validate_open(open: &Open, check: &OpenCheck) -> Result<(), Notification> {
    let asn = open.asn();
    if open.my_as == 0 || asn == 0 {
        return Err(open_error(OpenSubcode::BadPeerAs, Vec::new()));
    }
    if check.peer_as.is_some_and(|expected| expected != asn) {
        return Err(open_error(
            OpenSubcode::BadPeerAs,
            open.my_as.to_be_bytes().to_vec(),
        ));
    }
    if matches!(open.hold_time, 1 | 2) {
        return Err(open_error(OpenSubcode::UnacceptableHoldTime, Vec::new()));
    }
    let ibgp = asn == check.local_as;
    if open.bgp_id == Ipv4Addr::UNSPECIFIED || (ibgp && open.bgp_id == check.local_id) {
        return Err(open_error(
            OpenSubcode::BadBgpIdentifier,
            open.bgp_id.octets().to_vec(),
        ));
    }
    Ok(())
}
