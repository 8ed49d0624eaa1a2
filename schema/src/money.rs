//! Money is integer nano-USD (10⁻⁹ dollars): sums stay exact, floats never add up.

/// Nano-dollars in one dollar.
pub const NANOS_PER_USD: i64 = 1_000_000_000;

/// Parses a non-negative decimal USD amount such as `"0.0123"` into nano-USD.
///
/// Digits past the ninth decimal are rounded half up. Returns `None` for anything that is
/// not a plain decimal (signs, exponents, empty parts) or that overflows.
pub fn parse_usd_nanos(text: &str) -> Option<i64> {
    let (whole, frac) = match text.split_once('.') {
        Some((w, f)) => (w, f),
        None => (text, ""),
    };
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) || (text.contains('.') && frac.is_empty()) {
        return None;
    }
    let whole: i64 = whole.parse().ok()?;
    let mut nanos = whole.checked_mul(NANOS_PER_USD)?;
    let mut scale = NANOS_PER_USD / 10;
    for digit in frac.bytes().take(9) {
        nanos = nanos.checked_add(i64::from(digit - b'0') * scale)?;
        scale /= 10;
    }
    if frac.len() > 9 && frac.as_bytes()[9] >= b'5' {
        nanos = nanos.checked_add(1)?;
    }
    Some(nanos)
}

/// Converts a JSON number holding USD into nano-USD, exactly as its decimal text reads.
pub fn json_usd_nanos(value: &serde_json::Number) -> Option<i64> {
    if let Some(n) = value.as_u64() {
        return i64::try_from(n).ok()?.checked_mul(NANOS_PER_USD);
    }
    let f = value.as_f64()?;
    if !f.is_finite() || f < 0.0 {
        return None;
    }
    // Display of an f64 is its shortest round-trip decimal, never in exponent form.
    parse_usd_nanos(&f.to_string())
}

/// Like [`json_usd_nanos`], but a negative amount (a credit) is allowed.
pub fn json_signed_usd_nanos(value: &serde_json::Number) -> Option<i64> {
    if let Some(n) = value.as_i64() {
        return n.checked_mul(NANOS_PER_USD);
    }
    let f = value.as_f64()?;
    if !f.is_finite() {
        return None;
    }
    let magnitude = parse_usd_nanos(&f.abs().to_string())?;
    Some(if f < 0.0 { -magnitude } else { magnitude })
}

/// Renders nano-USD as a JSON number whose shortest decimal form is the exact amount.
pub fn nanos_to_json(nanos: i64) -> serde_json::Value {
    if nanos % NANOS_PER_USD == 0 {
        return serde_json::Value::from(nanos / NANOS_PER_USD);
    }
    // Division is correctly rounded, so this is the double nearest to the exact decimal.
    serde_json::Number::from_f64(nanos as f64 / NANOS_PER_USD as f64)
        .map(serde_json::Value::Number)
        .unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exact_decimals() {
        assert_eq!(parse_usd_nanos("0"), Some(0));
        assert_eq!(parse_usd_nanos("1"), Some(1_000_000_000));
        assert_eq!(parse_usd_nanos("0.0123"), Some(12_300_000));
        assert_eq!(parse_usd_nanos("12.000000001"), Some(12_000_000_001));
        assert_eq!(parse_usd_nanos("0.0000000015"), Some(2));
        assert_eq!(parse_usd_nanos("0.0000000014"), Some(1));
    }

    #[test]
    fn refuses_what_is_not_a_plain_decimal() {
        for bad in [
            "",
            ".5",
            "5.",
            "-1",
            "1e-3",
            "1.2.3",
            "abc",
            "99999999999999999999",
        ] {
            assert_eq!(parse_usd_nanos(bad), None, "{bad}");
        }
    }

    #[test]
    fn json_numbers_round_trip() {
        for text in ["0.0123", "0.000001", "3", "1234.5678", "0.000000001"] {
            let number: serde_json::Number = serde_json::from_str(text).expect("a number");
            let nanos = json_usd_nanos(&number).expect("an amount");
            assert_eq!(
                nanos_to_json(nanos),
                serde_json::Value::Number(number),
                "{text}"
            );
        }
    }
}
