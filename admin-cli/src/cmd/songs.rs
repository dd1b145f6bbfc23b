//! `rondo songs`: list songs, optionally searched; a page, or the whole
//! library page by page (`--all`); as text or JSON.

use rondo_cli::client::Client;
use serde_json::{Value, json};

use super::Exit;

const QUERY: &str = "query($s: String, $n: Int, $a: String) { songs(search: $s, first: $n, after: $a) { \
    totalCount pageInfo { hasNextPage endCursor } \
    nodes { id title durationMs sizeBytes artist { name } album { title } } } }";

pub async fn run(
    client: &Client,
    search: Option<String>,
    page: u32,
    all: bool,
    as_json: bool,
) -> anyhow::Result<Exit> {
    let mut songs: Vec<Value> = Vec::new();
    let mut after: Option<String> = None;
    let mut total;
    loop {
        let data = client
            .query(QUERY, json!({ "s": search, "n": page, "a": after }))
            .await?;
        let page = &data["songs"];
        total = page["totalCount"].as_u64().unwrap_or(0);
        songs.extend(page["nodes"].as_array().cloned().unwrap_or_default());
        after = page
            .pointer("/pageInfo/endCursor")
            .and_then(Value::as_str)
            .map(str::to_string);
        let more = page
            .pointer("/pageInfo/hasNextPage")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if !all || !more || after.is_none() {
            break;
        }
    }
    if as_json {
        let out = json!({ "totalCount": total, "songs": songs });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(Exit::Success);
    }
    for s in &songs {
        let ms = s["durationMs"].as_u64().unwrap_or(0);
        println!(
            "{}  {} — {} — {}  {}:{:02}  {}",
            s["id"].as_str().unwrap_or_default(),
            s["title"].as_str().unwrap_or_default(),
            s.pointer("/artist/name")
                .and_then(Value::as_str)
                .unwrap_or_default(),
            s.pointer("/album/title")
                .and_then(Value::as_str)
                .unwrap_or_default(),
            ms / 60_000,
            (ms / 1000) % 60,
            indicatif::BinaryBytes(s["sizeBytes"].as_u64().unwrap_or(0)),
        );
    }
    println!("{} of {total} songs", songs.len());
    Ok(Exit::Success)
}
