//! Typed reading of an event's fields, with errors that name them.

use super::{Limits, Problem, RejectCode};
use serde_json::{Map, Value};

/// Typed access to an event's (or a nested object's) fields, with errors that name them.
pub(super) struct Fields<'a> {
    pub(super) object: &'a Map<String, Value>,
    pub(super) limits: &'a Limits,
    pub(super) prefix: &'a str,
}

impl<'a> Fields<'a> {
    fn path(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    pub(super) fn required_str(&self, name: &str) -> Result<String, Problem> {
        self.optional_str(name)?.ok_or_else(|| {
            let path = self.path(name);
            Problem::new(
                RejectCode::MissingField,
                &path,
                format!("{path} is required"),
            )
        })
    }

    /// A short string (id, name): absent, null and "" all read as `None`.
    pub(super) fn optional_str(&self, name: &str) -> Result<Option<String>, Problem> {
        self.optional_text(name, self.limits.max_string_chars)
    }

    pub(super) fn optional_text(
        &self,
        name: &str,
        max_chars: usize,
    ) -> Result<Option<String>, Problem> {
        let path = self.path(name);
        match self.object.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) if s.chars().count() > max_chars => Err(Problem::new(
                RejectCode::TooLong,
                &path,
                format!("{path} is longer than {max_chars} characters"),
            )),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(Problem::new(
                RejectCode::InvalidType,
                &path,
                format!("{path} must be a string"),
            )),
        }
    }

    /// A non-negative integer no larger than `max`.
    pub(super) fn optional_count(&self, name: &str, max: u64) -> Result<Option<u64>, Problem> {
        let path = self.path(name);
        match self.object.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(count) if count <= max => Ok(Some(count)),
                Some(_) => Err(Problem::new(
                    RejectCode::InvalidValue,
                    &path,
                    format!("{path} is larger than {max}"),
                )),
                None => Err(Problem::new(
                    RejectCode::InvalidValue,
                    &path,
                    format!("{path} must be a non-negative integer"),
                )),
            },
            Some(_) => Err(Problem::new(
                RejectCode::InvalidType,
                &path,
                format!("{path} must be a number"),
            )),
        }
    }

    pub(super) fn optional_object(&self, name: &'a str) -> Result<Option<Fields<'a>>, Problem> {
        match self.object.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(inner)) => Ok(Some(Fields {
                object: inner,
                limits: self.limits,
                prefix: name,
            })),
            Some(_) => {
                let path = self.path(name);
                Err(Problem::new(
                    RejectCode::InvalidType,
                    &path,
                    format!("{path} must be an object"),
                ))
            }
        }
    }
}
