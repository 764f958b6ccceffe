use shadowcat_policy_sdk::{Config, Policy, Table};
use shadowcat_policy_sim::OnTable;
use shadowcat_policy_sim::testing::assert_matches_model;

use crate::{Tuned, WTinyLfu};

type Guest = OnTable<WTinyLfu<Tuned>>;

fn create(capacity: u64, config: &[(&str, &str)]) -> Result<Guest, String> {
    let config = config
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Guest::create(&Table::new(capacity), &Config::new(config))
}

#[test]
fn wtinylfu_tuned_matches_the_reference_model_with_pinned_refusals() {
    assert_matches_model(
        |capacity| create(capacity, &[]).expect("defaults"),
        "wtinylfu-tuned",
        &[],
        false,
    );
}

#[test]
fn wtinylfu_tuned_takes_every_key_of_wtinylfu() {
    let config = [("variant", "caffeine"), ("victim-sample", "4")];
    assert_matches_model(
        |capacity| create(capacity, &config).expect("valid"),
        "wtinylfu-tuned",
        &config,
        false,
    );
    let err = create(10, &[("sample", "0")]).err().expect("refused");
    assert!(err.contains("`sample`"), "{err}");
    assert!(create(10, &[("variant", "libcachesim")]).is_ok());
}
