//! Host bindings generated from the versioned WIT package in `wit/`.

wasmtime::component::bindgen!({
    path: "../wit/0.1.0",
    world: "eviction-policy",
});

pub use exports::shadowcat::policy::policy::Guest as PolicyExports;
pub use shadowcat::policy::host::Level;
pub use shadowcat::policy::types::Needs;
