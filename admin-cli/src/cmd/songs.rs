//! `rondo songs`: list songs, optionally searched.

use rondo_cli::api::SongPage;
use rondo_cli::client::Client;
use serde::Deserialize;
use serde_json::json;

use super::Exit;

pub async fn run(client: &Client, search: Option<String>, limit: u32) -> anyhow::Result<Exit> {
    #[derive(Deserialize)]
    struct Data {
        songs: SongPage,
    }
    let data: Data = client
        .query_as(
            "query($s: String, $n: Int) { songs(search: $s, first: $n) { totalCount nodes { id title durationMs artist { name } album { title } } } }",
            json!({ "s": search, "n": limit.min(100) }),
        )
        .await?;
    for s in &data.songs.nodes {
        let ms = s.duration_ms;
        println!(
            "{}  {} — {} — {}  {}:{:02}",
            s.id,
            s.title,
            s.artist.name,
            s.album.title,
            ms / 60_000,
            (ms / 1000) % 60
        );
    }
    println!(
        "{} of {} songs",
        data.songs.nodes.len(),
        data.songs.total_count
    );
    Ok(Exit::Success)
}
