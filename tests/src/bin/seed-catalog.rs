//! Bench helper: loads a synthetic catalog into a storage node through its
//! public gRPC upload path (the one the gateway uses), so that the search
//! benchmark runs against a gateway whose index was built the normal way.
//!
//! Every song gets its own small blob (its index as bytes), so the node does
//! the same per-song work as for a real upload minus the audio bytes.
//! Names are made from a fixed syllable table with a seeded generator, so two
//! runs with the same arguments load the same catalog.
//!
//! Usage: `seed-catalog DEV_DATA_DIR SONGS [CONCURRENCY] [CJK_SONGS]`: the
//! first node of a `rondo dev` deployment, called as its gateway (its
//! cluster certificate: internal gRPC is mutual TLS). `CJK_SONGS` more
//! songs get Japanese and Chinese titles and artists (no spaces between
//! words), and 2,000 distinct one- to three-character pieces of those
//! titles are written to `DEV_DATA_DIR/cjk-queries.txt`, one per line, for
//! the benchmark to search for.

use anyhow::{Context, bail};
use futures::StreamExt;
use rondo_proto::storage::v1::{
    self as pb, storage_node_client::StorageNodeClient, upload_song_request::Part,
};

const SYLLABLES: &[&str] = &[
    "ka", "lo", "mi", "ra", "sen", "tor", "vel", "an", "bri", "co", "dun", "el", "fa", "gor",
    "hal", "is", "jun", "ke", "lum", "mor", "nu", "ost", "pe", "quin", "ri", "sa", "tem", "ul",
    "vor", "wen", "xa", "yo", "zel", "ber", "cal", "dra",
];

/// Characters of the CJK names: kanji, hiragana and katakana.
const CJK: &[&str] = &[
    "東", "京", "大", "阪", "夜", "空", "海", "星", "光", "風", "雨", "雪", "花", "春", "夏", "秋",
    "冬", "愛", "恋", "心", "夢", "歌", "声", "月", "日", "山", "川", "森", "町", "道", "の", "と",
    "に", "を", "さ", "く", "ら", "あ", "い", "う", "ア", "イ", "ス", "タ", "ワ", "ー", "ロ", "ン",
];

/// A small deterministic generator (SplitMix64), enough for names.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }

    fn word(&mut self) -> String {
        let n = 2 + self.next() % 2;
        let mut w: String = (0..n).map(|_| self.pick(SYLLABLES)).collect();
        if let Some(first) = w.get_mut(0..1) {
            first.make_ascii_uppercase();
        }
        w
    }

    fn words(&mut self, min: u64, max: u64) -> String {
        let n = min + self.next() % (max - min + 1);
        (0..n).map(|_| self.word()).collect::<Vec<_>>().join(" ")
    }

    /// A CJK name of `min` to `max` characters, without spaces.
    fn cjk(&mut self, min: u64, max: u64) -> String {
        let n = min + self.next() % (max - min + 1);
        (0..n).map(|_| self.pick(CJK)).collect()
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(dir), Some(count)) = (args.get(1), args.get(2)) else {
        bail!("usage: seed-catalog DEV_DATA_DIR SONGS [CONCURRENCY]");
    };
    let dir = std::path::Path::new(dir);
    let info = rondo_cli::devenv::read_dev_info(dir)?;
    let url = &info.nodes.first().context("no node in dev.json")?.grpc_url;
    let count: u64 = count.parse().context("SONGS must be a number")?;
    let concurrency: usize = args
        .get(3)
        .map_or(Ok(16), |c| c.parse())
        .context("CONCURRENCY")?;
    let cjk: u64 = args
        .get(4)
        .map_or(Ok(0), |c| c.parse())
        .context("CJK_SONGS")?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls = rondo_proto::mtls::ClusterTls::from_files(
        &dir.join("tls/cluster-ca.pem"),
        &dir.join("gateway/cluster-cert.pem"),
        &dir.join("gateway/cluster-key.pem"),
    )?;
    let links = rondo_proto::mtls::Links::tcp(std::sync::Arc::new(tls));
    let endpoint = rondo_proto::channel::endpoint(url, rondo_proto::channel::Link::Client)?;
    let channel = links
        .connect(endpoint, rondo_proto::mtls::Expect::AnyNode)
        .await
        .with_context(|| format!("connect to {url}"))?;
    let client = StorageNodeClient::new(channel).max_decoding_message_size(16 << 20);

    // 10 songs per album, 5 albums per artist.
    let mut g = Gen(0x5EED);
    let albums_n = count.div_ceil(10);
    let artists: Vec<pb::Artist> = (0..albums_n.div_ceil(5))
        .map(|_| pb::Artist {
            id: uuid::Uuid::new_v4().to_string(),
            name: g.words(1, 2),
        })
        .collect();
    let albums: Vec<pb::Album> = (0..albums_n)
        .map(|i| {
            let artist = &artists[(i / 5) as usize];
            pb::Album {
                id: uuid::Uuid::new_v4().to_string(),
                title: g.words(1, 3),
                artist_id: artist.id.clone(),
                year: Some(1960 + (g.next() % 65) as u32),
                art: None,
            }
        })
        .collect();
    // The CJK songs: 10 per album, 5 albums per artist, like the others.
    let cjk_albums_n = cjk.div_ceil(10);
    let cjk_artists: Vec<pb::Artist> = (0..cjk_albums_n.div_ceil(5))
        .map(|_| pb::Artist {
            id: uuid::Uuid::new_v4().to_string(),
            name: g.cjk(2, 5),
        })
        .collect();
    let cjk_albums: Vec<pb::Album> = (0..cjk_albums_n)
        .map(|i| {
            let artist = &cjk_artists[(i / 5) as usize];
            pb::Album {
                id: uuid::Uuid::new_v4().to_string(),
                title: g.cjk(2, 6),
                artist_id: artist.id.clone(),
                year: Some(1960 + (g.next() % 65) as u32),
                art: None,
            }
        })
        .collect();
    let cjk_titles: Vec<String> = (0..cjk).map(|_| g.cjk(3, 10)).collect();
    if cjk > 0 {
        let mut queries = std::collections::BTreeSet::new();
        let mut tries = 0;
        while queries.len() < 2000 && tries < 1_000_000 {
            tries += 1;
            let title: Vec<char> = cjk_titles[(g.next() % cjk) as usize].chars().collect();
            let len = (1 + g.next() % 3) as usize;
            if title.len() < len {
                continue;
            }
            let at = (g.next() % (title.len() - len + 1) as u64) as usize;
            queries.insert(title[at..at + len].iter().collect::<String>());
        }
        let text: String = queries.into_iter().map(|q| q + "\n").collect();
        std::fs::write(dir.join("cjk-queries.txt"), text).context("write cjk-queries.txt")?;
    }
    let cjk_songs = cjk_titles.into_iter().enumerate().map(|(i, title)| {
        let i = i as u64;
        let album = &cjk_albums[(i / 10) as usize];
        let artist = &cjk_artists[(i / 50) as usize];
        pb::Song {
            id: uuid::Uuid::new_v4().to_string(),
            title,
            artist: Some(artist.clone()),
            album: Some(album.clone()),
            track_number: Some((i % 10 + 1) as u32),
            year: album.year,
            genre: Some("J-Pop".into()),
            duration_ms: 180_000,
            mime_type: "audio/wav".into(),
            ..Default::default()
        }
    });
    let songs: Vec<pb::Song> = (0..count)
        .map(|i| {
            let album = &albums[(i / 10) as usize];
            let artist = &artists[(i / 50) as usize];
            pb::Song {
                id: uuid::Uuid::new_v4().to_string(),
                title: g.words(1, 4),
                artist: Some(artist.clone()),
                album: Some(album.clone()),
                track_number: Some((i % 10 + 1) as u32),
                year: album.year,
                genre: Some(
                    g.pick(&["Rock", "Jazz", "Folk", "Ambient", "Pop"])
                        .to_string(),
                ),
                duration_ms: 180_000,
                mime_type: "audio/wav".into(),
                ..Default::default()
            }
        })
        .chain(cjk_songs)
        .collect();

    let started = std::time::Instant::now();
    let mut done = 0u64;
    let mut uploads = futures::stream::iter(songs.into_iter().enumerate())
        .map(|(i, song)| {
            let mut client = client.clone();
            async move {
                let blob = rondo_tests::tiny_wav(format!("rondo-seed-{i}").as_bytes());
                let hash = blake3::hash(&blob).to_hex().to_string();
                let parts = [
                    Part::Header(pb::SongHeader { song: Some(song) }),
                    Part::Chunk(blob),
                    Part::Finish(pb::Finish { content_hash: hash }),
                ];
                let requests =
                    futures::stream::iter(parts.map(|p| pb::UploadSongRequest { part: Some(p) }));
                client.upload_song(requests).await
            }
        })
        .buffer_unordered(concurrency);
    while let Some(reply) = uploads.next().await {
        reply.context("upload")?;
        done += 1;
        if done.is_multiple_of(10_000) {
            eprintln!("{done} songs in {:.1} s", started.elapsed().as_secs_f64());
        }
    }
    println!(
        "loaded {done} songs, {} albums, {} artists in {:.1} s",
        albums.len() + cjk_albums.len(),
        artists.len() + cjk_artists.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
