//! A JSON client for one server under test: requests carry the session
//! token as `X-Session-ID`, answers come back as (status, JSON body).

use reqwest::StatusCode;
use serde_json::Value;

pub struct SessionClient {
    pub url: String,
    pub http: reqwest::Client,
}

impl SessionClient {
    pub fn new(url: String) -> Self {
        SessionClient {
            url,
            http: reqwest::Client::new(),
        }
    }

    /// Sends the request (with the session, if any); a body that is not JSON
    /// comes back as a JSON string.
    pub async fn send(
        &self,
        rb: reqwest::RequestBuilder,
        token: Option<&str>,
    ) -> (StatusCode, Value) {
        let rb = match token {
            Some(t) => rb.header("X-Session-ID", t),
            None => rb,
        };
        let resp = rb.send().await.expect("request sent");
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.send(self.http.get(format!("{}{path}", self.url)), token)
            .await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.send(
            self.http.post(format!("{}{path}", self.url)).json(&body),
            token,
        )
        .await
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.send(self.http.delete(format!("{}{path}", self.url)), token)
            .await
    }
}
