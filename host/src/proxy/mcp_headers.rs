//! The HTTP headers of MCP's streamable HTTP transport, and the protocol
//! revisions the proxy serves.

pub const SESSION_ID: &str = "mcp-session-id";
pub const PROTOCOL_VERSION: &str = "mcp-protocol-version";
/// 2026-07-28: the JSON-RPC method of the body, and the tool, resource or
/// prompt it names.
pub const MCP_METHOD: &str = "mcp-method";
pub const MCP_NAME: &str = "mcp-name";
pub const LAST_EVENT_ID: &str = "last-event-id";

/// Hop-by-hop headers (RFC 9110, 7.6.1): they belong to one connection, so
/// no hop passes them on and no configured upstream header may be one.
pub const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Revisions with protocol sessions (`initialize`, `MCP-Session-Id`).
pub const SESSION_ERA: [&str; 4] = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];
/// Revisions without protocol sessions: every request stands alone.
pub const STATELESS_ERA: [&str; 1] = ["2026-07-28"];
/// What a request without the header is assumed to speak (the revision that
/// introduced the header says so).
pub const ASSUMED_WITHOUT_HEADER: &str = "2025-03-26";

/// Which kind of protocol a request speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Era {
    /// 2025-11-25 and earlier: `initialize` opens a session named by
    /// `MCP-Session-Id`.
    Sessions,
    /// 2026-07-28: no protocol session; the proxy keys its own by client.
    Stateless,
}

/// The era of a `MCP-Protocol-Version` header value, or `None` when the
/// proxy does not serve that revision.
pub fn era_of(version: Option<&str>) -> Option<Era> {
    match version {
        None => Some(Era::Sessions),
        Some(v) if SESSION_ERA.contains(&v) => Some(Era::Sessions),
        Some(v) if STATELESS_ERA.contains(&v) => Some(Era::Stateless),
        Some(_) => None,
    }
}

/// Whether a client of this revision takes a priming event (an event id with
/// empty data: a cursor to resume a stream from before any message came).
/// 2025-11-25 introduced them; earlier clients may fail on empty data, and
/// 2026-07-28 has no stream to resume.
pub fn takes_priming_events(version: Option<&str>) -> bool {
    version == Some("2025-11-25")
}

/// Whether a client of this revision may post a JSON-RPC batch: 2025-03-26
/// (and a client without the header, which speaks it) and 2024-11-05 allow
/// them; 2025-06-18 removed them.
pub fn takes_batches(version: Option<&str>) -> bool {
    matches!(
        version.unwrap_or(ASSUMED_WITHOUT_HEADER),
        "2024-11-05" | "2025-03-26"
    )
}

pub fn supported_versions() -> String {
    SESSION_ERA
        .iter()
        .chain(&STATELESS_ERA)
        .copied()
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_protocol_versions_map_to_their_era() {
        assert_eq!(era_of(None), Some(Era::Sessions));
        assert_eq!(era_of(Some("2025-11-25")), Some(Era::Sessions));
        assert_eq!(era_of(Some("2024-11-05")), Some(Era::Sessions));
        assert_eq!(era_of(Some("2026-07-28")), Some(Era::Stateless));
        assert_eq!(era_of(Some("1999-01-01")), None);
        assert!(supported_versions().contains("2026-07-28"));
        assert!(takes_priming_events(Some("2025-11-25")));
        for older_or_stateless in [None, Some("2025-06-18"), Some("2026-07-28")] {
            assert!(!takes_priming_events(older_or_stateless));
        }
        for with_batches in [None, Some("2025-03-26"), Some("2024-11-05")] {
            assert!(takes_batches(with_batches), "{with_batches:?}");
        }
        for without in [Some("2025-06-18"), Some("2025-11-25"), Some("2026-07-28")] {
            assert!(!takes_batches(without), "{without:?}");
        }
    }
}
