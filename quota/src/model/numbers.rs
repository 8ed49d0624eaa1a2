//! JSON integers as JSON Schema counts them: `5` and `5.0` are both the integer 5 (a value
//! with a fraction is still refused).

use serde::{Deserialize, Deserializer};

fn whole<'de, D: Deserializer<'de>>(number: serde_json::Number) -> Result<i128, D::Error> {
    if let Some(n) = number.as_i64() {
        return Ok(i128::from(n));
    }
    if let Some(n) = number.as_u64() {
        return Ok(i128::from(n));
    }
    match number.as_f64() {
        Some(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 9.2e18 => Ok(f as i128),
        _ => Err(serde::de::Error::custom(format!(
            "invalid value: {number}, expected a whole number"
        ))),
    }
}

pub fn u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let n = whole::<D>(serde_json::Number::deserialize(d)?)?;
    u64::try_from(n).map_err(|_| {
        serde::de::Error::custom(format!(
            "invalid value: {n}, expected a non-negative whole number"
        ))
    })
}

pub fn i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let n = whole::<D>(serde_json::Number::deserialize(d)?)?;
    i64::try_from(n)
        .map_err(|_| serde::de::Error::custom(format!("invalid value: {n}, out of range")))
}

pub fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    u64(d).map(Some)
}

#[cfg(test)]
mod tests {
    #[derive(Debug, serde::Deserialize)]
    struct Body {
        #[serde(deserialize_with = "super::u64")]
        n: u64,
        #[serde(default, deserialize_with = "super::i64")]
        signed: i64,
    }

    #[test]
    fn whole_floats_are_integers_and_fractions_are_not() {
        let read = |text: &str| serde_json::from_str::<Body>(text);
        assert_eq!(
            read(r#"{"n": 5.0, "signed": -7.0}"#)
                .map(|b| (b.n, b.signed))
                .ok(),
            Some((5, -7))
        );
        assert_eq!(read(r#"{"n": 5}"#).map(|b| b.n).ok(), Some(5));
        assert!(read(r#"{"n": 5.5}"#).is_err());
        assert!(read(r#"{"n": -1}"#).is_err());
        assert!(read(r#"{"n": 1e300}"#).is_err());
    }
}
