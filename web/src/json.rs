//! A JSON body extractor whose every rejection is a JSON error naming the
//! problem: 413 over the size limit, 415 for a non-JSON content type, 400 for
//! malformed JSON, 422 for well-formed JSON of the wrong shape.

use axum::extract::{FromRequest, Request};
use axum::http::header::CONTENT_TYPE;
use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::ApiError;

pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        // A missing content type is accepted (curl users forget it); a wrong one is not.
        if let Some(ct) = req.headers().get(CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or("");
            let essence = ct
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            if essence != "application/json" && !essence.ends_with("+json") {
                return Err(ApiError::new(
                    axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    format!("expected Content-Type application/json, got {ct:?}"),
                ));
            }
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rej| {
            let status = rej.status();
            if status == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(status, "request body is larger than the configured limit")
            } else {
                ApiError::new(
                    status,
                    format!("cannot read request body: {}", rej.body_text()),
                )
            }
        })?;
        parse(&bytes).map(JsonBody)
    }
}

/// Parses a JSON document, classifying errors into 400 (syntax) and 422
/// (shape). A request type that is a struct takes a JSON object only: serde
/// would otherwise read `[a, b, …]` as its fields in order.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "request body is empty; expected a JSON object",
        ));
    }
    let classify = |e: serde_json::Error| match e.classify() {
        serde_json::error::Category::Data => {
            let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
            match first {
                Some(b'[') if e.to_string().contains("expected struct") => ApiError::unprocessable(
                    "invalid request: the body must be a JSON object, not an array",
                ),
                _ => ApiError::unprocessable(format!("invalid request: {e}")),
            }
        }
        _ => ApiError::bad_request(format!("malformed JSON: {e}")),
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = T::deserialize(ObjectsOnly(&mut de)).map_err(classify)?;
    de.end().map_err(classify)?;
    Ok(value)
}

/// A deserializer that reads a struct from a JSON object only (never from
/// an array); everything else as the inner one does.
struct ObjectsOnly<D>(D);

macro_rules! forward {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {
        $(
            fn $method<V: serde::de::Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, Self::Error> {
                self.0.$method($($arg,)* visitor)
            }
        )*
    };
}

impl<'de, D: serde::Deserializer<'de>> serde::Deserializer<'de> for ObjectsOnly<D> {
    type Error = D::Error;

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_map(visitor)
    }

    forward! {
        deserialize_any(); deserialize_bool(); deserialize_i8(); deserialize_i16();
        deserialize_i32(); deserialize_i64(); deserialize_i128(); deserialize_u8();
        deserialize_u16(); deserialize_u32(); deserialize_u64(); deserialize_u128();
        deserialize_f32(); deserialize_f64(); deserialize_char(); deserialize_str();
        deserialize_string(); deserialize_bytes(); deserialize_byte_buf();
        deserialize_option(); deserialize_unit(); deserialize_seq(); deserialize_map();
        deserialize_identifier(); deserialize_ignored_any();
        deserialize_unit_struct(name: &'static str);
        deserialize_newtype_struct(name: &'static str);
        deserialize_tuple(len: usize);
        deserialize_tuple_struct(name: &'static str, len: usize);
        deserialize_enum(name: &'static str, variants: &'static [&'static str]);
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    struct Two {
        a: i64,
        b: String,
    }

    #[test]
    fn a_struct_comes_from_an_object_only() {
        assert_eq!(
            parse::<Two>(br#"{"a": 1, "b": "x"}"#).unwrap(),
            Two {
                a: 1,
                b: "x".into()
            }
        );
        let e = parse::<Two>(br#" [1, "x"]"#).unwrap_err();
        assert_eq!(e.status, axum::http::StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            e.message.contains("must be a JSON object, not an array"),
            "{}",
            e.message
        );
        let e = parse::<Two>(b"42").unwrap_err();
        assert_eq!(e.status, axum::http::StatusCode::UNPROCESSABLE_ENTITY);
        assert!(e.message.contains("expected struct Two"), "{}", e.message);
        let e = parse::<Two>(br#"{"a": 1, "b": "x"} trailing"#).unwrap_err();
        assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
        // Anything that is not a struct reads as before.
        assert_eq!(parse::<Vec<i64>>(b"[1,2]").unwrap(), vec![1, 2]);
        assert_eq!(
            parse::<serde_json::Value>(b"[1]").unwrap(),
            serde_json::json!([1])
        );
    }
}
