//! A small GraphQL client for the gateway.

use std::path::Path;

use serde_json::{Value, json};

use crate::error::{Error, Result};

/// Connection settings for a gateway.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    /// HTTP/1.1 only, for direct uploads to storage nodes: one plain body
    /// per connection streams faster than HTTP/2's flow-controlled frames.
    direct: Option<reqwest::Client>,
    /// Base URL of the gateway, e.g. `https://127.0.0.1:8443`.
    pub base: String,
    token: Option<String>,
}

/// Builds a rustls client configuration trusting the CA certificates in
/// `ca_pem`, or, if it is empty, the system's trust roots (a gateway whose
/// certificate a public CA signed).
pub fn tls_config(ca_pem: &[u8]) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    if ca_pem.is_empty() {
        let found = rustls_native_certs::load_native_certs();
        let (added, _) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            return Err(Error::Certificate(
                "no CA certificate given and no system trust roots found".into(),
            ));
        }
    }
    for cert in
        rondo_core::tls::certificates(ca_pem).map_err(|e| Error::Certificate(e.to_string()))?
    {
        roots
            .add(cert)
            .map_err(|e| Error::Certificate(e.to_string()))?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Certificate(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// An HTTP client trusting the CA in `ca_pem`.
pub fn http_client(ca_pem: &[u8]) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls_config(ca_pem)?)
        .build()
        .map_err(|source| Error::Http {
            url: String::new(),
            source,
        })
}

/// The first GraphQL error of a response, if any.
pub fn first_error(response: &Value) -> Option<Error> {
    let e = response.get("errors")?.as_array()?.first()?;
    Some(Error::GraphQl {
        code: e
            .pointer("/extensions/code")
            .and_then(Value::as_str)
            .unwrap_or("UNKNOWN")
            .to_string(),
        message: e
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
    })
}

impl Client {
    /// A client for the gateway at `base`, trusting `ca_pem`.
    pub fn new(base: &str, ca_pem: &[u8], token: Option<String>) -> Result<Client> {
        let mut h1 = tls_config(ca_pem)?;
        h1.alpn_protocols = vec![b"http/1.1".to_vec()];
        let direct = reqwest::Client::builder()
            .tls_backend_preconfigured(h1)
            .http1_only()
            .build()
            .map_err(|source| Error::Http {
                url: String::new(),
                source,
            })?;
        Ok(Client {
            http: http_client(ca_pem)?,
            direct: Some(direct),
            base: base.trim_end_matches('/').to_string(),
            token,
        })
    }

    /// A client over a prepared HTTP client (for tests that pin where a
    /// name resolves, e.g. a floating address).
    pub fn with_http(http: reqwest::Client, base: &str, token: Option<String>) -> Client {
        Client {
            http,
            direct: None,
            base: base.trim_end_matches('/').to_string(),
            token,
        }
    }

    /// The underlying HTTP client (trusts the cluster CA).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The GraphQL endpoint.
    pub fn url(&self) -> String {
        format!("{}/graphql", self.base)
    }

    async fn read(&self, response: reqwest::Response) -> Result<Value> {
        let url = self.url();
        let status = response.status().as_u16();
        let text = response.text().await.map_err(|source| Error::Http {
            url: url.clone(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|_| Error::Unexpected {
            url,
            status,
            body: text.chars().take(300).collect(),
        })
    }

    /// Runs a query and returns the whole response (`data` and `errors`).
    pub async fn raw(&self, query: &str, variables: Value) -> Result<Value> {
        let mut req = self
            .http
            .post(self.url())
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let response = req.send().await.map_err(|source| Error::Http {
            url: self.url(),
            source,
        })?;
        self.read(response).await
    }

    /// Runs a query and reads its data as `T` (see [`crate::api`]).
    pub async fn query_as<T: serde::de::DeserializeOwned>(
        &self,
        query: &str,
        variables: Value,
    ) -> Result<T> {
        let data = self.query(query, variables).await?;
        serde_json::from_value(data).map_err(|source| Error::Json {
            context: "the gateway's answer".into(),
            source,
        })
    }

    /// Runs a query and returns `data`, or the first error.
    pub async fn query(&self, query: &str, variables: Value) -> Result<Value> {
        let response = self.raw(query, variables).await?;
        if let Some(e) = first_error(&response) {
            return Err(e);
        }
        Ok(response.get("data").cloned().unwrap_or(Value::Null))
    }

    /// Uploads a file with the GraphQL multipart request spec and returns the
    /// whole response; `selection` is of the song (`data.uploadSong.song`,
    /// beside `data.uploadSong.duplicate`). The file is streamed, not read
    /// into memory.
    pub async fn upload_raw(
        &self,
        path: &Path,
        overrides: Value,
        selection: &str,
    ) -> Result<Value> {
        let file = tokio::fs::File::open(path)
            .await
            .map_err(Error::io(format!("open {}", path.display())))?;
        let len = file
            .metadata()
            .await
            .map_err(Error::io(format!("stat {}", path.display())))?
            .len();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "upload".into());
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
        self.upload_body(body, len, &name, overrides, selection)
            .await
    }

    /// Uploads a body of `len` bytes named `name` straight to a storage node:
    /// `createUpload` for a signed URL, then one `PUT` of the body there.
    /// Returns `{"song": …, "duplicate": bool}`: the song as the node stored
    /// it, or (`duplicate`) the song the bytes already are; a refusal comes
    /// back as [`Error::GraphQl`] with the API's code.
    pub async fn upload_direct(
        &self,
        body: reqwest::Body,
        len: u64,
        name: &str,
        overrides: Value,
    ) -> Result<Value> {
        let mut variables = json!({ "size": len, "name": name });
        if let (Some(v), Some(o)) = (variables.as_object_mut(), overrides.as_object()) {
            v.extend(o.clone());
        }
        let data = self
            .query(
                "mutation($size: UnsignedInt64, $name: String, $title: String, $artist: String, $album: String) { createUpload(sizeBytes: $size, fileName: $name, title: $title, artist: $artist, album: $album) { url } }",
                variables,
            )
            .await?;
        let url = data
            .pointer("/createUpload/url")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::Unexpected {
                url: self.url(),
                status: 200,
                body: data.to_string().chars().take(300).collect(),
            })?
            .to_string();
        let http = self.direct.as_ref().unwrap_or(&self.http);
        let response = http
            .put(&url)
            .header(reqwest::header::CONTENT_LENGTH, len)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(body)
            .send()
            .await
            .map_err(|source| Error::Http {
                url: url.clone(),
                source,
            })?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(|source| Error::Http {
            url: url.clone(),
            source,
        })?;
        let answer: Option<Value> = serde_json::from_str(&text).ok();
        match answer {
            // 201: stored; 200: the bytes were already that song.
            Some(a) if status == 201 || status == 200 => Ok(json!({
                "song": a.get("song").cloned().unwrap_or(Value::Null),
                "duplicate": status == 200 || a["duplicate"] == true,
            })),
            Some(a) if a.pointer("/error/code").is_some() => Err(Error::GraphQl {
                code: a
                    .pointer("/error/code")
                    .and_then(Value::as_str)
                    .unwrap_or("UNKNOWN")
                    .to_string(),
                message: a
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            }),
            _ => Err(Error::Unexpected {
                url,
                status,
                body: text.chars().take(300).collect(),
            }),
        }
    }

    /// Uploads a body of `len` bytes named `name` (multipart request spec).
    pub async fn upload_body(
        &self,
        body: reqwest::Body,
        len: u64,
        name: &str,
        overrides: Value,
        selection: &str,
    ) -> Result<Value> {
        let mut variables = json!({ "file": null });
        if let (Some(v), Some(o)) = (variables.as_object_mut(), overrides.as_object()) {
            v.extend(o.clone());
        }
        let operations = json!({
            "query": format!("mutation($file: Upload!, $title: String, $artist: String, $album: String) {{ uploadSong(file: $file, title: $title, artist: $artist, album: $album) {{ duplicate song {selection} }} }}"),
            "variables": variables,
        });
        let form = reqwest::multipart::Form::new()
            .text("operations", operations.to_string())
            .text("map", json!({ "0": ["variables.file"] }).to_string())
            .part(
                "0",
                reqwest::multipart::Part::stream_with_length(body, len).file_name(name.to_string()),
            );
        let mut req = self.http.post(self.url()).multipart(form);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let response = req.send().await.map_err(|source| Error::Http {
            url: self.url(),
            source,
        })?;
        self.read(response).await
    }
}
