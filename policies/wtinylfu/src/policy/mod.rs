//! What `wtinylfu` and `wtinylfu-tuned` share: the policy, its settings and
//! their defaults. The two crates differ only in their name and default
//! variant ([`Defaults`]); `wtinylfu-tuned` compiles this module by path.

use std::marker::PhantomData;

use shadowcat_policy_sdk::{Config, Table, Traits};
use shadowcat_policy_sim::{Simulated, bad_value, sessions_only};

mod core;
mod libcachesim;
mod sketch;

/// Every setting of the Caffeine-style variants, as the config names them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Params {
    /// `window`: initial window share of the capacity.
    pub window: f64,
    /// `protected`: protected share of the main cache.
    pub protected: f64,
    /// `adaptive`: move the window by hill climbing.
    pub adaptive: bool,
    /// `sketch-width`: counters per row per power of two of the capacity.
    pub sketch_width: u32,
    /// `sample`: additions between halvings, per session of capacity.
    pub sample: u32,
    /// `doorkeeper`: a key's first addition only marks a Bloom filter.
    pub doorkeeper: bool,
    /// `victim-sample`: probation entries the main victim is chosen from.
    pub victim_sample: u32,
}

impl Params {
    /// Caffeine 3's defaults (`BoundedLocalCache`, `FrequencySketch`).
    pub const CAFFEINE: Self = Self {
        window: 0.01,
        protected: 0.80,
        adaptive: true,
        sketch_width: 4,
        sample: 10,
        doorkeeper: false,
        victim_sample: 1,
    };

    /// The settings that miss least on the measured workloads (see the crate
    /// documentation of `wtinylfu-tuned` for how they were chosen).
    pub const TUNED: Self = Self {
        window: 0.03,
        protected: 0.80,
        adaptive: false,
        sketch_width: 16,
        sample: 30,
        doorkeeper: true,
        victim_sample: 16,
    };
}

/// The keys the Caffeine-style variants accept besides `variant`.
pub const KEYS: &[&str] = &[
    "window",
    "protected",
    "adaptive",
    "sketch-width",
    "sample",
    "doorkeeper",
    "victim-sample",
];

/// A variant's name and settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Variant {
    Caffeine,
    Tuned,
    LibCacheSim,
}

impl Variant {
    fn parse(name: &str) -> Result<Self, String> {
        match name {
            "caffeine" => Ok(Self::Caffeine),
            "tuned" => Ok(Self::Tuned),
            "libcachesim" => Ok(Self::LibCacheSim),
            other => Err(bad_value(
                "variant",
                "`caffeine`, `tuned` or `libcachesim`",
                other,
            )),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Caffeine => "caffeine",
            Self::Tuned => "tuned",
            Self::LibCacheSim => "libcachesim",
        }
    }
}

/// What distinguishes the two shipped crates.
pub trait Defaults: 'static {
    const NAME: &'static str;
    const VERSION: &'static str;
    const VARIANT: Variant;
}

/// Reads the settings: the variant, and unless it is libCacheSim's (which has
/// none) its defaults, each overridden by its key.
pub fn params(
    policy: &str,
    default: Variant,
    config: &Config,
) -> Result<(Variant, Option<Params>), String> {
    let mut accepted = vec!["variant"];
    accepted.extend_from_slice(KEYS);
    config.check_keys(policy, &accepted)?;
    let variant = match config.get("variant") {
        None => default,
        Some(name) => Variant::parse(name.trim())?,
    };
    let preset = match variant {
        Variant::Caffeine => Params::CAFFEINE,
        Variant::Tuned => Params::TUNED,
        Variant::LibCacheSim => {
            if let Some(key) = KEYS.iter().find(|k| config.get(k).is_some()) {
                return Err(format!(
                    "{policy} policy: `{key}` does not apply to `variant=libcachesim`, whose \
                     settings are libCacheSim's; leave it out or pick another variant"
                ));
            }
            return Ok((variant, None));
        }
    };
    let params = Params {
        window: config.f64_or("window", preset.window)?,
        protected: config.f64_or("protected", preset.protected)?,
        adaptive: config.bool_or("adaptive", preset.adaptive)?,
        sketch_width: config.u32_or("sketch-width", preset.sketch_width)?,
        sample: config.u32_or("sample", preset.sample)?,
        doorkeeper: config.bool_or("doorkeeper", preset.doorkeeper)?,
        victim_sample: config.u32_or("victim-sample", preset.victim_sample)?,
    };
    if !(params.window > 0.0 && params.window < 1.0) {
        return Err(bad_value(
            "window",
            "a share above 0 and below 1 (Caffeine: 0.01)",
            params.window,
        ));
    }
    if !(0.0..=1.0).contains(&params.protected) {
        return Err(bad_value(
            "protected",
            "a share from 0 to 1 (Caffeine: 0.8)",
            params.protected,
        ));
    }
    if !params.sketch_width.is_power_of_two() || params.sketch_width > 256 {
        return Err(bad_value(
            "sketch-width",
            "a power of two from 1 to 256 (Caffeine: 4)",
            params.sketch_width,
        ));
    }
    if params.sample == 0 {
        return Err(bad_value(
            "sample",
            "at least 1 (Caffeine: 10)",
            params.sample,
        ));
    }
    if params.victim_sample == 0 || params.victim_sample > 1024 {
        return Err(bad_value(
            "victim-sample",
            "1 to 1024 (Caffeine: 1)",
            params.victim_sample,
        ));
    }
    Ok((variant, Some(params)))
}

enum Inner {
    Caffeine(core::Core),
    LibCacheSim(libcachesim::LibCacheSim),
}

/// The policy, simulator-style; `OnTable` runs it under the table's protocol.
pub struct WTinyLfu<D> {
    inner: Inner,
    variant: Variant,
    defaults: PhantomData<D>,
}

impl<D> WTinyLfu<D> {
    pub fn variant(&self) -> &'static str {
        self.variant.as_str()
    }
}

impl<D: Defaults> Simulated for WTinyLfu<D> {
    const NAME: &'static str = D::NAME;
    const VERSION: &'static str = D::VERSION;
    // Eviction moves the window's oldest entry and may promote it: the order
    // changes while choosing, so it is not stable.
    const TRAITS: Traits = Traits::empty();

    fn create(table: &Table, config: &Config) -> Result<Self, String> {
        sessions_only(D::NAME, table)?;
        let (variant, params) = params(D::NAME, D::VARIANT, config)?;
        let inner = match params {
            Some(params) => Inner::Caffeine(core::Core::new(table.capacity, params)),
            None => Inner::LibCacheSim(libcachesim::LibCacheSim::new(table.capacity)),
        };
        Ok(Self {
            inner,
            variant,
            defaults: PhantomData,
        })
    }

    fn arrive(&mut self, key: u64) {
        if let Inner::Caffeine(c) = &mut self.inner {
            c.arrive(key);
        }
    }

    fn admit(&mut self, id: u64, key: u64, _time: u64, _evicted: &mut Vec<u64>) {
        match &mut self.inner {
            Inner::Caffeine(c) => c.admit(id, key),
            Inner::LibCacheSim(l) => l.admit(id, key),
        }
    }

    fn hit(&mut self, id: u64, _time: u64, evicted: &mut Vec<u64>) {
        match &mut self.inner {
            Inner::Caffeine(c) => c.hit(id),
            Inner::LibCacheSim(l) => l.hit(id, evicted),
        }
    }

    fn evict(&mut self, _candidates: &[u64], evicted: &mut Vec<u64>) {
        match &mut self.inner {
            Inner::Caffeine(c) => evicted.extend(c.evict()),
            Inner::LibCacheSim(l) => l.evict(evicted),
        }
    }

    fn forget(&mut self, id: u64) {
        match &mut self.inner {
            Inner::Caffeine(c) => c.forget(id),
            Inner::LibCacheSim(l) => l.forget(id),
        }
    }
}
