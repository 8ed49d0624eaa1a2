//! Prices and cost, in integer nano-USD.
//!
//! The price table ([`PriceTable`]) holds, per model, dated rows of USD per million tokens for
//! input, output, cache reads and cache writes. An event is priced by the row in force at its
//! timestamp. Token semantics follow OpenTelemetry GenAI: `input_tokens` includes cache reads
//! and writes, so
//!
//! ```text
//! cost = (input − cache_read − cache_write) × input price
//!      + cache_read × cache read price + cache_write × cache write price
//!      + output × output price
//! ```
//!
//! rounded half up to a whole nano-dollar per event. Totals are sums of those integers.

use crate::event::{Timestamp, Usage};
use crate::money::parse_usd_nanos;
use chrono::NaiveDate;

/// The built-in table, `schema/prices/prices.csv`.
pub const BUILT_IN_PRICES: &str = include_str!("../prices/prices.csv");

/// Prices of one model from one date on, in nano-USD per million tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Price {
    pub model: String,
    pub provider: String,
    /// Midnight UTC of the first day this price applies, in Unix milliseconds.
    pub effective_from_ms: i64,
    pub input: i64,
    pub output: i64,
    pub cache_read: i64,
    pub cache_write: i64,
    pub source: String,
}

impl Price {
    /// The cost of `usage` at this price, in nano-USD.
    pub fn cost_nanos(&self, usage: &Usage) -> i64 {
        let uncached = usage.input_tokens.saturating_sub(
            usage
                .cache_read_tokens
                .saturating_add(usage.cache_write_tokens),
        );
        let nanos_times_million = i128::from(uncached) * i128::from(self.input)
            + i128::from(usage.cache_read_tokens) * i128::from(self.cache_read)
            + i128::from(usage.cache_write_tokens) * i128::from(self.cache_write)
            + i128::from(usage.output_tokens) * i128::from(self.output);
        let rounded = (nanos_times_million + 500_000) / 1_000_000;
        i64::try_from(rounded).unwrap_or(i64::MAX)
    }
}

/// Why a price file was refused, with its line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("price table line {line}: {reason}")]
pub struct PriceError {
    pub line: usize,
    pub reason: String,
}

#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    /// Sorted by model, then effective date.
    prices: Vec<Price>,
}

impl PriceTable {
    /// The built-in table.
    pub fn built_in() -> Self {
        // The built-in file is checked by a unit test, so this cannot fail in a release.
        Self::parse(BUILT_IN_PRICES).unwrap_or_default()
    }

    /// Reads a CSV price table (`#` lines are comments; the first other line is the header).
    pub fn parse(text: &str) -> Result<Self, PriceError> {
        let mut table = Self::default();
        table.add_csv(text)?;
        Ok(table)
    }

    /// Adds the rows of another CSV table; a row for the same model and date replaces the old one.
    pub fn add_csv(&mut self, text: &str) -> Result<(), PriceError> {
        let mut header_seen = false;
        for (number, line) in text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if !header_seen {
                header_seen = true;
                if !line.starts_with("model,") {
                    return Err(PriceError {
                        line: number,
                        reason: "the header must start with `model,`".into(),
                    });
                }
                continue;
            }
            let price = parse_row(line).map_err(|reason| PriceError {
                line: number,
                reason,
            })?;
            self.prices.retain(|p| {
                !(p.model == price.model && p.effective_from_ms == price.effective_from_ms)
            });
            self.prices.push(price);
        }
        self.prices
            .sort_by(|a, b| (&a.model, a.effective_from_ms).cmp(&(&b.model, b.effective_from_ms)));
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.prices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.prices.is_empty()
    }

    /// The price in force for `model` at `at`. A dated or suffixed model name
    /// (`gpt-4o-2024-08-06`) falls back to the longest listed name it starts with, at a `-`.
    pub fn price(&self, model: &str, at: Timestamp) -> Option<&Price> {
        let model = model.trim().to_ascii_lowercase();
        let mut candidate = model.as_str();
        loop {
            if let Some(price) = self.in_force(candidate, at) {
                return Some(price);
            }
            candidate = &candidate[..candidate.rfind('-')?];
        }
    }

    fn in_force(&self, model: &str, at: Timestamp) -> Option<&Price> {
        self.prices
            .iter()
            .rfind(|p| p.model == model && p.effective_from_ms <= at.0)
    }

    /// The cost of an event in nano-USD, or `None` when its model has no price at its time.
    pub fn cost_nanos(&self, model: &str, at: Timestamp, usage: &Usage) -> Option<i64> {
        self.price(model, at).map(|p| p.cost_nanos(usage))
    }
}

fn parse_row(line: &str) -> Result<Price, String> {
    let cells: Vec<&str> = line.split(',').map(str::trim).collect();
    if cells.len() != 8 {
        return Err(format!("expected 8 columns, found {}", cells.len()));
    }
    let amount = |name: &str, text: &str| -> Result<i64, String> {
        parse_usd_nanos(text)
            .ok_or_else(|| format!("{name} {text:?} is not a non-negative USD amount"))
    };
    let input = amount("input", cells[3])?;
    let optional = |name: &str, text: &str| {
        if text.is_empty() {
            Ok(input)
        } else {
            amount(name, text)
        }
    };
    let date = NaiveDate::parse_from_str(cells[2], "%Y-%m-%d")
        .map_err(|_| format!("effective_from {:?} is not YYYY-MM-DD", cells[2]))?;
    let model = cells[0].to_ascii_lowercase();
    if model.is_empty() {
        return Err("model is empty".into());
    }
    Ok(Price {
        model,
        provider: cells[1].to_owned(),
        effective_from_ms: date
            .and_hms_opt(0, 0, 0)
            .map(|d| d.and_utc().timestamp_millis())
            .unwrap_or(0),
        input,
        output: amount("output", cells[4])?,
        cache_read: optional("cache_read", cells[5])?,
        cache_write: optional("cache_write", cells[6])?,
        source: cells[7].to_owned(),
    })
}

#[cfg(test)]
mod tests;
