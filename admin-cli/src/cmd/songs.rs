//! `rondo songs`: list songs, optionally searched; a page, or the whole
//! library page by page (`--all`); as text or JSON.

use rondo_cli::api::SongPage;
use rondo_cli::client::Client;
use serde::Deserialize;
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
    #[derive(Deserialize)]
    struct Data {
        songs: SongPage,
    }
    // The songs as they came (for --json) and as read.
    let mut raw: Vec<Value> = Vec::new();
    let mut songs = Vec::new();
    let mut after: Option<String> = None;
    let mut total;
    loop {
        let data = client
            .query(QUERY, json!({ "s": search, "n": page, "a": after }))
            .await?;
        raw.extend(
            data.pointer("/songs/nodes")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
        );
        let Data { songs: got } = serde_json::from_value(data)?;
        total = got.total_count;
        songs.extend(got.nodes);
        after = got.page_info.end_cursor;
        if !all || !got.page_info.has_next_page || after.is_none() {
            break;
        }
    }
    if as_json {
        let out = json!({ "totalCount": total, "songs": raw });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(Exit::Success);
    }
    for s in &songs {
        let ms = s.duration_ms;
        println!(
            "{}  {} — {} — {}  {}:{:02}  {}",
            s.id,
            s.title,
            s.artist.name,
            s.album.title,
            ms / 60_000,
            (ms / 1000) % 60,
            indicatif::BinaryBytes(s.size_bytes),
        );
    }
    println!("{} of {total} songs", songs.len());
    Ok(Exit::Success)
}
