//! Pricing vectors: known usages priced to the nano-dollar, cache tokens included.

use super::*;
use chrono::{TimeZone, Utc};

fn at(y: i32, m: u32, d: u32) -> Timestamp {
    Timestamp::from_datetime(
        Utc.with_ymd_and_hms(y, m, d, 12, 0, 0)
            .single()
            .expect("date"),
    )
}

fn usage(input: u64, output: u64, cache_read: u64, cache_write: u64) -> Usage {
    Usage {
        input_tokens: input,
        output_tokens: output,
        cache_read_tokens: cache_read,
        cache_write_tokens: cache_write,
    }
}

#[test]
fn the_built_in_table_parses_and_covers_every_family() {
    let table = PriceTable::parse(BUILT_IN_PRICES).expect("built-in table parses");
    let models: std::collections::BTreeSet<_> =
        table.prices.iter().map(|p| p.model.as_str()).collect();
    assert!(models.len() >= 30, "{} models", models.len());
    for provider in [
        "openai",
        "anthropic",
        "google",
        "meta",
        "mistral",
        "deepseek",
    ] {
        assert!(
            table.prices.iter().any(|p| p.provider == provider),
            "{provider}"
        );
    }
    assert!(table
        .prices
        .iter()
        .all(|p| p.source.starts_with("https://")));
}

#[test]
fn vectors() {
    let table = PriceTable::built_in();
    let cases = [
        // gpt-4o: 1,200 in of which 1,000 cached, 300 out:
        // 200 × 2.50 + 1,000 × 1.25 + 300 × 10.00 = 4,750 USD per M tokens = 4,750,000 nano-USD.
        (
            "gpt-4o",
            at(2026, 1, 5),
            usage(1_200, 300, 1_000, 0),
            4_750_000,
        ),
        // Without cache: 1,200 × 2.50 + 300 × 10 = 6,000 → 6,000,000.
        ("gpt-4o", at(2026, 1, 5), usage(1_200, 300, 0, 0), 6_000_000),
        // claude-sonnet-4-5 with a cache write: 10,000 in = 2,000 plain + 5,000 read + 3,000 written;
        // 2,000×3 + 5,000×0.30 + 3,000×3.75 + 500×15 = 6,000 + 1,500 + 11,250 + 7,500 = 26,250.
        (
            "claude-sonnet-4-5",
            at(2026, 1, 5),
            usage(10_000, 500, 5_000, 3_000),
            26_250_000,
        ),
        // A dated snapshot name falls back to its family.
        (
            "claude-sonnet-4-5-20250929",
            at(2026, 1, 5),
            usage(10_000, 500, 5_000, 3_000),
            26_250_000,
        ),
        // One token of gpt-5-nano input: 0.05 USD/M = 50 nano-USD.
        ("gpt-5-nano", at(2026, 1, 5), usage(1, 0, 0, 0), 50),
        // Rounding half up per event: 1 cached token of gpt-5-nano = 5 nano; 1 cache read of
        // gemini-1.5-flash = 18.75 → 19.
        ("gpt-5-nano", at(2026, 1, 5), usage(1, 0, 1, 0), 5),
        ("gemini-1.5-flash", at(2025, 1, 5), usage(1, 0, 1, 0), 19),
        // A model without cache prices bills cached tokens as input.
        (
            "mistral-large",
            at(2026, 1, 5),
            usage(1_000, 1_000, 400, 0),
            8_000_000,
        ),
        // Effective dates: deepseek-chat before and after its price change.
        (
            "deepseek-chat",
            at(2025, 9, 1),
            usage(1_000_000, 1_000_000, 0, 0),
            1_370_000_000,
        ),
        (
            "deepseek-chat",
            at(2025, 10, 1),
            usage(1_000_000, 1_000_000, 0, 0),
            700_000_000,
        ),
        ("o3", at(2025, 5, 1), usage(1_000, 0, 0, 0), 10_000_000),
        ("o3", at(2025, 7, 1), usage(1_000, 0, 0, 0), 2_000_000),
    ];
    for (model, when, usage, nanos) in cases {
        assert_eq!(
            table.cost_nanos(model, when, &usage),
            Some(nanos),
            "{model} {usage:?}"
        );
    }
}

#[test]
fn unknown_models_and_times_before_any_price_have_no_cost() {
    let table = PriceTable::built_in();
    assert_eq!(
        table.cost_nanos("my-finetune", at(2026, 1, 5), &usage(10, 10, 0, 0)),
        None
    );
    assert_eq!(
        table.cost_nanos("gpt-5", at(2024, 1, 5), &usage(10, 10, 0, 0)),
        None
    );
}

#[test]
fn a_deployment_file_adds_and_replaces_rows() {
    let mut table = PriceTable::built_in();
    let before = table.len();
    table
        .add_csv(
            "model,provider,effective_from,input,output,cache_read,cache_write,source\n\
                  my-finetune,acme,2026-01-01,1.00,2.00,,,internal\n\
                  gpt-4o,openai,2024-10-01,3.00,12.00,1.50,,corrected\n",
        )
        .expect("valid");
    assert_eq!(table.len(), before + 1);
    assert_eq!(
        table.cost_nanos("my-finetune", at(2026, 2, 1), &usage(1_000, 1_000, 0, 0)),
        Some(3_000_000)
    );
    assert_eq!(
        table.cost_nanos("gpt-4o", at(2026, 2, 1), &usage(1_000, 0, 0, 0)),
        Some(3_000_000)
    );
}

#[test]
fn bad_rows_name_their_line() {
    let err = PriceTable::parse("model,provider,effective_from,input,output,cache_read,cache_write,source\nx,y,2026-13-01,1,1,,,s\n")
        .expect_err("bad date");
    assert_eq!(err.line, 2);
    let err = PriceTable::parse("model,provider,effective_from,input,output,cache_read,cache_write,source\nx,y,2026-01-01,-1,1,,,s\n")
        .expect_err("negative");
    assert!(err.reason.contains("input"));
}
