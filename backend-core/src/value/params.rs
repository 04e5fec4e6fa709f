//! [`ParamsExt`]: typed access to a process's parameters by name, with an error that names
//! the parameter and what it holds instead of a panic or a silent default.

use super::{Params, Value};

/// Typed access to a process's parameters, by name: each getter says which parameter is
/// missing (and which there are) or what type it holds instead, so a misspelt name or a
/// wrong type is an error instead of a panic (`p["xx"]`) or a silent 0
/// (`as_f64().unwrap_or_default()`). The error is the core's [`Error`](crate::Error), so
/// `?` works in [`Operation::try_sweep`](crate::Operation::try_sweep)'s closure and, through
/// [`ProcessError`](crate::ProcessError), in [`Process::run`](crate::Process::run).
///
/// ```
/// use backend_core::{Params, ParamsExt, Value};
/// let p: Params = [("alpha".to_owned(), Value::from(0.5)), ("seed".to_owned(), Value::from(3))].into_iter().collect();
/// assert_eq!(p.f64("alpha").unwrap(), 0.5);
/// assert_eq!(p.u32("seed").unwrap(), 3);
/// assert_eq!(p.f64("seed").unwrap(), 3.0); // a whole number is a number too
/// assert!(p.f64("alhpa").unwrap_err().to_string().contains("there is no parameter `alhpa`"));
/// assert!(p.str("alpha").unwrap_err().to_string().contains("is the float 0.5, not a string"));
/// ```
pub trait ParamsExt {
    /// The value of the parameter `name`.
    fn value(&self, name: &str) -> crate::Result<&Value>;

    /// A number (an integer is read as a float).
    fn f64(&self, name: &str) -> crate::Result<f64> {
        let value = self.value(name)?;
        value.as_f64().ok_or_else(|| wrong_type(name, value, "a number"))
    }

    /// A whole number from `i64::MIN` to `i64::MAX`.
    fn i64(&self, name: &str) -> crate::Result<i64> {
        whole(name, self.value(name)?)
    }

    /// A whole number from 0 to `u64::MAX`.
    fn u64(&self, name: &str) -> crate::Result<u64> {
        whole(name, self.value(name)?)
    }

    /// A whole number that fits an `i32`.
    fn i32(&self, name: &str) -> crate::Result<i32> {
        whole(name, self.value(name)?)
    }

    /// A whole number that fits a `u32`.
    fn u32(&self, name: &str) -> crate::Result<u32> {
        whole(name, self.value(name)?)
    }

    /// A whole number that fits a `usize`.
    fn usize(&self, name: &str) -> crate::Result<usize> {
        whole(name, self.value(name)?)
    }

    /// A string.
    fn str(&self, name: &str) -> crate::Result<&str> {
        let value = self.value(name)?;
        value.as_str().ok_or_else(|| wrong_type(name, value, "a string"))
    }

    /// `true` or `false`.
    fn bool(&self, name: &str) -> crate::Result<bool> {
        match self.value(name)? {
            Value::Bool(b) => Ok(*b),
            other => Err(wrong_type(name, other, "true or false")),
        }
    }

    /// Any type serde can read from the value (a list, a table, a struct of your own).
    fn typed<T: serde::de::DeserializeOwned>(&self, name: &str) -> crate::Result<T> {
        let value = self.value(name)?;
        value.to_typed().map_err(|reason| crate::Error::ParameterType {
            name: name.to_owned(),
            found: describe(value),
            expected: format!("what `{}` reads ({reason})", std::any::type_name::<T>()),
        })
    }
}

impl ParamsExt for Params {
    fn value(&self, name: &str) -> crate::Result<&Value> {
        self.get(name).ok_or_else(|| crate::Error::ParameterMissing {
            name: name.to_owned(),
            known: if self.is_empty() {
                "none".to_owned()
            } else {
                self.keys().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
            },
        })
    }
}

/// `the integer 3`, `the string "a"`: a value as an error message names it (long ones cut).
fn describe(value: &Value) -> String {
    let text = match value {
        Value::Str(s) => format!("{s:?}"),
        other => other.to_string(),
    };
    let text =
        if text.chars().count() > 40 { format!("{}…", text.chars().take(40).collect::<String>()) } else { text };
    format!("the {} {text}", value.type_name())
}

fn wrong_type(name: &str, value: &Value, expected: &str) -> crate::Error {
    crate::Error::ParameterType { name: name.to_owned(), found: describe(value), expected: expected.to_owned() }
}

/// A whole number of type `T`, or an error that names `T`'s range.
fn whole<T>(name: &str, value: &Value) -> crate::Result<T>
where
    T: TryFrom<i64> + TryFrom<u64> + num_bounds::Bounds,
{
    let fits = match value {
        Value::Int(i) => T::try_from(*i).ok(),
        Value::UInt(u) => T::try_from(*u).ok(),
        _ => None,
    };
    fits.ok_or_else(|| {
        let (min, max) = T::range_text();
        wrong_type(name, value, &format!("a whole number from {min} to {max} ({})", std::any::type_name::<T>()))
    })
}

mod num_bounds {
    /// The range of an integer type, as text for messages.
    pub(crate) trait Bounds {
        fn range_text() -> (String, String);
    }
    macro_rules! bounds {
        ($($t:ty),*) => {$(
            impl Bounds for $t {
                fn range_text() -> (String, String) {
                    (<$t>::MIN.to_string(), <$t>::MAX.to_string())
                }
            }
        )*};
    }
    bounds!(i32, i64, u32, u64, usize);
}
