//! Host bindings of every published policy interface, side by side.
//!
//! Each version of `wit/` gets its own `bindgen!`, so a component built
//! against an older interface keeps loading; [`super::instance`] adapts the
//! older calls to the newest packed layouts.

/// `shadowcat:policy@0.1.0`: three-word events, no keys, no traits.
pub mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../wit/0.1.0",
        world: "eviction-policy",
    });
}

/// `shadowcat:policy@0.2.0`: the layouts of 0.3, without `ghost-conditional`.
pub mod v0_2 {
    wasmtime::component::bindgen!({
        path: "../wit/0.2.0",
        world: "eviction-policy",
    });
}

/// `shadowcat:policy@0.3.0`: the current interface.
pub mod v0_3 {
    wasmtime::component::bindgen!({
        path: "../wit/0.3.0",
        world: "eviction-policy",
    });
}

/// A published version of the policy interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum InterfaceVersion {
    V0_1,
    V0_2,
    V0_3,
}

impl InterfaceVersion {
    /// Newest first: a component exporting several is loaded as the newest.
    pub const SUPPORTED: [InterfaceVersion; 3] = [
        InterfaceVersion::V0_3,
        InterfaceVersion::V0_2,
        InterfaceVersion::V0_1,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            InterfaceVersion::V0_1 => "0.1.0",
            InterfaceVersion::V0_2 => "0.2.0",
            InterfaceVersion::V0_3 => "0.3.0",
        }
    }

    /// The interface a policy exports.
    pub fn export(self) -> &'static str {
        match self {
            InterfaceVersion::V0_1 => "shadowcat:policy/policy@0.1.0",
            InterfaceVersion::V0_2 => "shadowcat:policy/policy@0.2.0",
            InterfaceVersion::V0_3 => "shadowcat:policy/policy@0.3.0",
        }
    }

    /// The only imports a policy of this version may have: the log function,
    /// and the type-only interface its exports refer to.
    pub fn allowed_imports(self) -> [&'static str; 2] {
        match self {
            InterfaceVersion::V0_1 => [
                "shadowcat:policy/host@0.1.0",
                "shadowcat:policy/types@0.1.0",
            ],
            InterfaceVersion::V0_2 => [
                "shadowcat:policy/host@0.2.0",
                "shadowcat:policy/types@0.2.0",
            ],
            InterfaceVersion::V0_3 => [
                "shadowcat:policy/host@0.3.0",
                "shadowcat:policy/types@0.3.0",
            ],
        }
    }
}

impl std::fmt::Display for InterfaceVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
