//! Host bindings generated from the versioned WIT package in `wit/`.

wasmtime::component::bindgen!({
    path: "../wit/0.1.0",
    world: "eviction-policy",
});

pub use self::exports::shadowcat::policy::policy::Guest as PolicyExports;
pub use self::shadowcat::policy::host::Level;
pub use self::shadowcat::policy::types::Needs;
