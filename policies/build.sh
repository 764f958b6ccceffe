#!/usr/bin/env bash
# Builds every policy guest and test fixture:
#   policies/{lru,fifo,lfu}.wasm        what --eviction-policy NAME loads (interface 0.3)
#   tests/fixtures/hostile.wasm         misbehaves on demand, for the sandbox tests (0.3)
#   tests/fixtures/example-mru.wasm     the policy of policies/README.md's guide (0.3)
#   tests/fixtures/lru-0.1.wasm         an exact LRU against interface 0.1, without the SDK
#   tests/fixtures/wrong-version.wasm   0.1's shape under a version no host knows (0.99.0)
#   tests/fixtures/core-module.wasm     lru as a plain core module (not a component)
#   policies/{arc,s3fifo,sieve,twoq,clock,ttl,lfu-decay}.wasm
#                                       simulator-defined policies on policies/sim (0.3)
#   policies/{wtinylfu,wtinylfu-tuned}.wasm
#                                       W-TinyLFU, Caffeine's and tuned defaults (0.3)
#   policies/fair-quota.wasm            fair-share rate limits by AIMD, LRU eviction (0.3)
#   policies/lru-c.wasm                 lru written in C (wit-bindgen c, clang, lld-22) (0.2)
#
# Guests compile for wasm32-unknown-unknown. With rustup's target installed that is
# a plain cargo build; otherwise (these machines cannot download rustup targets) it
# uses Debian's rustc/cargo 1.96 with the std source, building std with the guest
# (-Zbuild-std) and linking with lld-22's wasm-ld. The core modules then become
# components via the root workspace's `shadowcat-componentize` tool.
#
# The output depends on the sources and the toolchain only, not on where the
# checkout or the cargo registry lives: panic locations embed source paths, so
# both are remapped to fixed prefixes. CI rebuilds in a fresh clone elsewhere and
# compares bytes with the committed files.
#
# Environment: SHADOWCAT_COMPONENTIZE=/path/to/binary skips building that tool.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
target=wasm32-unknown-unknown
debian_packages=(rustc-web rust-web-src cargo-web lld-22)
v01=shadowcat:policy/policy@0.1.0
v02=shadowcat:policy/policy@0.2.0
v03=shadowcat:policy/policy@0.3.0

# The guide's example must be the crate CI builds, word for word.
readme_example="$(awk '
    /^<!-- example-mru\/src\/lib.rs -->$/ { armed = 1; next }
    armed && /^```rust$/ { inside = 1; armed = 0; next }
    inside && /^```$/ { exit }
    inside { print }
' "$here/README.md")"
if [[ "$readme_example" != "$(<"$here/example-mru/src/lib.rs")" ]]; then
    echo "build.sh: the example in policies/README.md differs from policies/example-mru/src/lib.rs;" \
        "copy the crate's source into the README" >&2
    exit 1
fi

have_rustup_target() {
    command -v rustup >/dev/null 2>&1 &&
        rustup target list --installed 2>/dev/null | grep -qx "$target"
}

have_debian_toolchain() {
    local status
    status="$(dpkg-query -W -f='${Status}\n' "${debian_packages[@]}" 2>/dev/null)" || return 1
    [[ "$(grep -c 'install ok installed' <<<"$status")" -eq "${#debian_packages[@]}" ]]
}

cargo_args=(build --release --locked --quiet --target "$target" --manifest-path "$here/Cargo.toml")

if have_rustup_target; then
    guest_build=(cargo "${cargo_args[@]}")
else
    if ! have_debian_toolchain; then
        echo "build.sh: installing ${debian_packages[*]} (no rustup $target target)" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null
        apt-get install -y -qq "${debian_packages[@]}" >/dev/null
    fi
    # Full paths: rustup's shims come first in PATH and would pick a rustc that
    # has no wasm32 std and no std source.
    guest_build=(env RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1
        CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER=wasm-ld-22
        /usr/bin/cargo "${cargo_args[@]}" -Zbuild-std=std,panic_abort)
fi

cargo_home="${CARGO_HOME:-$HOME/.cargo}"
rustflags=(
    "--remap-path-prefix=$root=/shadowcat"
    "--remap-path-prefix=$cargo_home/registry/src=/cargo/registry/src"
    "--remap-path-prefix=$cargo_home/git/checkouts=/cargo/git/checkouts"
)
# The encoded form keeps paths with spaces intact, and it overrides any RUSTFLAGS
# or config rustflags of the caller's, which would change the output.
# cargo's messages are kept to recognise a lock file that lacks a new crate:
# --locked (the build must be the committed one) then stops with a message
# that does not say what to run.
cargo_log="$(mktemp)"
trap 'rm -f "$cargo_log"' EXIT
if ! CARGO_ENCODED_RUSTFLAGS="$(IFS=$'\x1f'; echo "${rustflags[*]}")" \
    CARGO_TARGET_DIR="$here/target" "${guest_build[@]}" 2>"$cargo_log"; then
    cat "$cargo_log" >&2
    if grep -q -- '--locked was passed' "$cargo_log"; then
        echo "build.sh: policies/Cargo.lock is out of date (a crate added to policies/Cargo.toml's" \
            "members, or a dependency changed); update it with" >&2
        echo "    cargo update --workspace --manifest-path policies/Cargo.toml" >&2
        echo "and commit it with the change" >&2
    fi
    exit 1
fi
cat "$cargo_log" >&2

if [[ -n "${SHADOWCAT_COMPONENTIZE:-}" ]]; then
    componentize=("$SHADOWCAT_COMPONENTIZE")
else
    if ! grep -qs 'policies/componentize' "$root/Cargo.toml"; then
        echo "build.sh: the root workspace ($root/Cargo.toml) must list \"policies/componentize\" in its members" >&2
        exit 1
    fi
    componentize=(cargo run --quiet --release --manifest-path "$root/Cargo.toml"
        -p shadowcat-componentize --)
fi

out="$here/target/$target/release"
mkdir -p "$root/tests/fixtures"
# Relative paths in the report below.
cd "$root"
"${componentize[@]}" \
    --module "$out/shadowcat_policy_lru.wasm" --output policies/lru.wasm --expect-export "$v03" \
    --module "$out/shadowcat_policy_fifo.wasm" --output policies/fifo.wasm --expect-export "$v03" \
    --module "$out/shadowcat_policy_lfu.wasm" --output policies/lfu.wasm --expect-export "$v03" \
    --module "$out/shadowcat_policy_hostile.wasm" --output tests/fixtures/hostile.wasm \
    --expect-export "$v03" \
    --module "$out/shadowcat_policy_example_mru.wasm" --output tests/fixtures/example-mru.wasm \
    --expect-export "$v03" \
    --module "$out/shadowcat_policy_legacy_lru.wasm" --output tests/fixtures/lru-0.1.wasm \
    --expect-export "$v01" \
    --module "$out/shadowcat_policy_wrong_version.wasm" --output tests/fixtures/wrong-version.wasm \
    --expect-export "shadowcat:policy/policy@0.99.0" \
    --module "$out/shadowcat_policy_arc.wasm" --output policies/arc.wasm --expect-export "$v03" \
    --module "$out/shadowcat_policy_s3fifo.wasm" --output policies/s3fifo.wasm --expect-export "$v03" \
    --module "$out/shadowcat_policy_sieve.wasm" --output policies/sieve.wasm --expect-export "$v03" \
    --module "$out/shadowcat_policy_twoq.wasm" --output policies/twoq.wasm --expect-export "$v03" \
    --module "$out/shadowcat_policy_clock.wasm" --output policies/clock.wasm --expect-export "$v03" \
    --module "$out/shadowcat_policy_ttl.wasm" --output policies/ttl.wasm --expect-export "$v03" \
    --module "$out/shadowcat_policy_lfu_decay.wasm" --output policies/lfu-decay.wasm \
    --expect-export "$v03"

# W-TinyLFU (Caffeine's defaults, and the tuned ones: the same code) and fair-quota.
"${componentize[@]}" \
    --module "$out/shadowcat_policy_wtinylfu.wasm" --output policies/wtinylfu.wasm \
    --expect-export "$v03" \
    --module "$out/shadowcat_policy_wtinylfu_tuned.wasm" --output policies/wtinylfu-tuned.wasm \
    --expect-export "$v03" \
    --module "$out/shadowcat_policy_fair_quota.wasm" --output policies/fair-quota.wasm \
    --expect-export "$v03"

# lru-c: the Rust lru's twin in C, from the WIT file alone, and the policy
# that keeps interface 0.2 loading (its layouts are 0.3's; the SDK is on 0.3).
# policies/c-bindgen (wit-bindgen's C generator at the version the Rust guests'
# bindings come from, a crate of its own built under policies/target/tools)
# writes the bindings; Debian's clang compiles them with the policy and its
# small freestanding libc (no WASI libc: a policy imports nothing but the
# host's log); lld-22 links; the same tool as above makes the component.
tools="$here/target/tools"
c_bindgen=(env CARGO_TARGET_DIR="$tools" cargo run --quiet --release --locked
    --manifest-path "$here/c-bindgen/Cargo.toml" --)
if ! command -v clang >/dev/null 2>&1; then
    echo "build.sh: installing clang (for policies/lru-c)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq clang >/dev/null
fi
c_out="$here/target/lru-c"
rm -rf "$c_out"
mkdir -p "$c_out"
if [[ ! -x "$tools/release/shadowcat-c-bindgen" ]]; then
    echo "build.sh: building policies/c-bindgen into $tools (once, about a minute)" >&2
fi
if ! generated="$("${c_bindgen[@]}" "$root/wit/0.2.0" eviction-policy "$c_out" 2>&1)"; then
    echo "$generated" >&2
    exit 1
fi
c_flags=(--target=wasm32-unknown-unknown -O2 -std=c11 -ffreestanding -nostdlib -mbulk-memory
    -Wall -Wextra -Werror -Wno-unused-parameter "-ffile-prefix-map=$root=/shadowcat"
    "-ffile-prefix-map=$c_out=/bindings" -I "$here/lru-c/include" -I "$c_out")
for source in "$here/lru-c/lru.c" "$here/lru-c/libc.c" "$c_out/eviction_policy.c"; do
    clang "${c_flags[@]}" -c "$source" -o "$c_out/$(basename "$source" .c).o"
done
wasm-ld-22 --no-entry --strip-all -o "$c_out/lru-c.core.wasm" "$c_out/lru.o" "$c_out/libc.o" \
    "$c_out/eviction_policy.o" "$c_out/eviction_policy_component_type.o"
"${componentize[@]}" \
    --module "$c_out/lru-c.core.wasm" --output policies/lru-c.wasm --expect-export "$v02"

install -m 0644 "$out/shadowcat_policy_lru.wasm" tests/fixtures/core-module.wasm.tmp
mv tests/fixtures/core-module.wasm.tmp tests/fixtures/core-module.wasm
echo "tests/fixtures/core-module.wasm: $(wc -c <tests/fixtures/core-module.wasm) bytes"
