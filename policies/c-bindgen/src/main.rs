//! `shadowcat-c-bindgen WIT_DIR WORLD OUT_DIR`: what `wit-bindgen c --world
//! WORLD --out-dir OUT_DIR WIT_DIR` writes, with its default options (the C
//! source, its header and the component type object), for policies/lru-c.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use wit_bindgen_core::wit_parser::Resolve;
use wit_bindgen_core::Files;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [wit, world, out] = args.as_slice() else {
        bail!("usage: shadowcat-c-bindgen WIT_DIR WORLD OUT_DIR (got {args:?})");
    };
    let mut resolve = Resolve::default();
    let (package, _) = resolve
        .push_path(wit)
        .with_context(|| format!("reading the WIT package in {wit}"))?;
    let world = resolve
        .select_world(&[package], Some(world))
        .with_context(|| format!("world {world} in {wit}"))?;
    let mut files = Files::default();
    wit_bindgen_c::Opts::default()
        .build()
        .generate(&mut resolve, world, &mut files)
        .context("generating the C bindings")?;
    let out = PathBuf::from(out);
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    for (name, contents) in files.iter() {
        let path = out.join(name);
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
