//! Test fixture: a trivial policy exporting `shadowcat:policy/policy@0.99.0`, built
//! against `wit/policy.wit`, a copy of the 0.1.0 interface with only the package
//! version changed. The host must refuse it with a version error rather than a
//! generic instantiation failure. It does not use the SDK, whose bindings follow the
//! current interface.

wit_bindgen::generate!({
    path: "wit",
    world: "eviction-policy",
});

use exports::shadowcat::policy::policy::Guest;
use shadowcat::policy::types::{Info, Needs};

#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
struct WrongVersion;

impl Guest for WrongVersion {
    fn create(_capacity: u64, _config: Vec<(String, String)>) -> Result<(), String> {
        Ok(())
    }

    fn info() -> Info {
        Info {
            name: "wrong-version".into(),
            version: "0.99.0".into(),
            needs: Needs::empty(),
            batch_size: 256,
        }
    }

    fn observe(_events: Vec<u64>) -> Result<(), String> {
        Ok(())
    }

    fn victims(_count: u32, _input: Vec<u64>) -> Result<Vec<u64>, String> {
        Ok(Vec::new())
    }

    fn adjust_quotas(_usage: Vec<u64>) -> Result<Vec<u64>, String> {
        Ok(Vec::new())
    }

    fn maintain(_now: u64) -> Result<(), String> {
        Ok(())
    }
}

// Natively the exports have no caller, and their names, which contain `:`,
// break the native linker's version script.
#[cfg(target_arch = "wasm32")]
export!(WrongVersion);
