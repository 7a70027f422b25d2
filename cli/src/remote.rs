//! The operator API as the read commands use it (`--api`, `--session`).

use anyhow::{Context, bail};
use serde_json::{Value, json};

pub struct Api {
    base: String,
    session: Option<String>,
    http: reqwest::Client,
}

impl Api {
    pub fn new(base: &str, session: Option<String>) -> anyhow::Result<Api> {
        let base = base.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("--api {base:?}: give a URL such as http://127.0.0.1:8080");
        }
        Ok(Api {
            base,
            session,
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()?,
        })
    }

    async fn send(&self, req: reqwest::RequestBuilder, what: &str) -> anyhow::Result<Value> {
        let req = match &self.session {
            Some(s) => req.header("X-Session-ID", s),
            None => req,
        };
        let resp = req
            .send()
            .await
            .with_context(|| format!("{what}: cannot reach {}", self.base))?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status.as_u16() == 401 {
            bail!(
                "{what}: {status}: give a session with --session or SIMCACHE_SESSION ({})",
                detail(&body)
            );
        }
        if !status.is_success() {
            bail!("{what}: {status}: {}", detail(&body));
        }
        Ok(body)
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.http.get(format!("{}{path}", self.base)), path)
            .await
    }

    /// Every simulation version (`GET /simulations/search`).
    pub async fn simulations(&self) -> anyhow::Result<Vec<Value>> {
        let v = self
            .get("/simulations/search?status=all&limit=1000")
            .await?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }

    pub async fn stats(&self, id: i64) -> anyhow::Result<Value> {
        self.get(&format!("/simulations/{id}/stats")).await
    }

    /// Results, newest first (`POST /search`).
    pub async fn results(
        &self,
        simulation: Option<&str>,
        limit: i64,
    ) -> anyhow::Result<Vec<Value>> {
        let mut body = json!({"limit": limit.clamp(1, 1000)});
        if let Some(s) = simulation {
            body["simulation_name"] = json!(s);
        }
        let v = self
            .send(
                self.http.post(format!("{}/search", self.base)).json(&body),
                "/search",
            )
            .await?;
        Ok(v["results"].as_array().cloned().unwrap_or_default())
    }

    /// A version's parameter definitions (`GET /schemas/{sim}/{version}`).
    pub async fn definitions(&self, simulation: &str, version: &str) -> anyhow::Result<Vec<Value>> {
        let v = self
            .get(&format!("/schemas/{simulation}/{version}"))
            .await?;
        Ok(v["parameters"].as_array().cloned().unwrap_or_default())
    }
}

fn detail(body: &Value) -> String {
    body.get("detail")
        .or_else(|| body.get("error"))
        .map(|d| {
            d.as_str()
                .map(str::to_string)
                .unwrap_or_else(|| d.to_string())
        })
        .unwrap_or_else(|| body.to_string())
}
