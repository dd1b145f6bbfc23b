//! Recognises and checks uploaded audio, and reads its tags and duration.
//!
//! The format is recognised from the bytes (lofty's content probe), never
//! from the file name. The whole stream is then demuxed with symphonia and its
//! first packets decoded, so that truncated or corrupt files are refused
//! before anything is stored. Demuxing reads every packet header but decodes
//! only a few packets, which keeps large uploads cheap.

pub mod art;

pub use art::Picture;
use rondo_core::{AlbumId, ArtistId, SongId};
use rondo_proto::storage::v1 as pb;
use std::io::{BufReader, Seek, SeekFrom};

use lofty::file::FileType;
use lofty::prelude::*;
use symphonia::core::codecs::{CODEC_TYPE_NULL, DecoderOptions};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::FormatOptions;
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

/// Why a file or a name was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not audio, or truncated or corrupt audio.
    #[error("unsupported media: {0}")]
    Unsupported(String),
    /// A title or name given with the upload is unusable.
    #[error("{0}")]
    BadName(String),
    /// Reading the file failed.
    #[error("{context}: {source}")]
    Io {
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    fn io(context: &'static str) -> impl FnOnce(std::io::Error) -> Error {
        move |source| Error::Io { context, source }
    }
}

/// Result alias for media checks.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Longest title or name kept (longer tags are cut, longer arguments refused).
pub const MAX_NAME: usize = 500;

/// Every media type [`inspect`] gives a song: the only types a node stores
/// or serves as audio.
pub const AUDIO_TYPES: [&str; 8] = [
    "audio/mpeg",
    "audio/flac",
    "audio/ogg",
    "audio/ogg; codecs=opus",
    "audio/mp4",
    "audio/aac",
    "audio/wav",
    "audio/aiff",
];

/// The version of [`inspect`] a song's fields come from
/// (`rondo.storage.v1.Song.inspected`): raised when it reads more, so that
/// records made by an older one can be told apart.
pub const INSPECTION: u32 = 2;

/// The album artist of a compilation that names none.
pub const VARIOUS_ARTISTS: &str = "Various Artists";

/// Whether `mime_type` is one of [`AUDIO_TYPES`].
pub fn is_audio_type(mime_type: &str) -> bool {
    AUDIO_TYPES.contains(&mime_type)
}

/// Values given with an upload that take precedence over the file's tags.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    pub title: Option<String>,
    pub artist: Option<String>,
    pub album: Option<String>,
}

impl Overrides {
    /// Trims the given values and refuses empty or over-long ones.
    pub fn checked(self) -> Result<Overrides> {
        Ok(Overrides {
            title: name_arg("title", self.title)?,
            artist: name_arg("artist", self.artist)?,
            album: name_arg("album", self.album)?,
        })
    }
}

fn name_arg(field: &str, value: Option<String>) -> Result<Option<String>> {
    match value.map(|v| v.trim().to_string()) {
        None => Ok(None),
        Some(v) if v.is_empty() => Err(Error::BadName(format!("{field} must not be empty"))),
        Some(v) if v.chars().count() > MAX_NAME => Err(Error::BadName(format!(
            "{field} must be at most {MAX_NAME} characters"
        ))),
        Some(v) => Ok(Some(v)),
    }
}

/// The names a song is filed under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    pub title: String,
    pub artist: String,
    pub album: String,
    /// The artist the album is filed under when it is not the track
    /// artist: the tagged album artist, or [`VARIOUS_ARTISTS`] for a
    /// compilation without one.
    pub album_artist: Option<String>,
}

/// Title, artist and album for an upload: the checked overrides first, then
/// the file's tags, then (for the title) the file name's stem, then
/// placeholders; cut to [`MAX_NAME`] characters. The album artist comes
/// from the tags only.
pub fn names(tags: &Tags, overrides: Overrides, file_name: Option<&str>) -> Names {
    let cut = |s: String| -> String { s.chars().take(MAX_NAME).collect() };
    let stem = file_name
        .and_then(|n| std::path::Path::new(n).file_stem())
        .map(|s| s.to_string_lossy().trim().to_string())
        .filter(|s| !s.is_empty());
    Names {
        title: cut(overrides
            .title
            .or_else(|| tags.title.clone())
            .or(stem)
            .unwrap_or_else(|| "Untitled".into())),
        artist: cut(overrides
            .artist
            .or_else(|| tags.artist.clone())
            .unwrap_or_else(|| "Unknown Artist".into())),
        album: cut(overrides
            .album
            .or_else(|| tags.album.clone())
            .unwrap_or_else(|| "Unknown Album".into())),
        album_artist: None,
    }
    .with_album_artist(tags)
}

impl Names {
    fn with_album_artist(mut self, tags: &Tags) -> Names {
        self.album_artist = album_artist(tags, &self.artist);
        self
    }
}

/// The artist a song's album is filed under when it is not the track
/// artist `artist`: the tagged album artist, or [`VARIOUS_ARTISTS`] for a
/// compilation without one.
pub fn album_artist(tags: &Tags, artist: &str) -> Option<String> {
    let album_artist = tags
        .album_artist
        .clone()
        .or_else(|| tags.compilation.then(|| VARIOUS_ARTISTS.to_string()));
    // The same name as the track artist is no other artist.
    album_artist.filter(|a| rondo_core::names::fold(a) != rondo_core::names::fold(artist))
}

/// The record `song` as a newer inspection `info` of its bytes reads it:
/// its id, names, hash and other fields stay; the fields an inspection
/// fills are replaced (the album artist by name only, with a new id: the
/// nodes file it when they apply it).
pub fn reinspected(song: &pb::Song, info: MediaInfo) -> pb::Song {
    let artist = song.artist.as_ref().map_or("", |a| a.name.as_str());
    let owner = album_artist(&info.tags, artist);
    let filing = Filing {
        artist: (ArtistId::new_random(), String::new()),
        album: (AlbumId::new_random(), String::new()),
        album_artist: owner.map(|name| (ArtistId::new_random(), name)),
    };
    let read = song_record(SongId::new_random(), String::new(), filing, info);
    with_inspection(song.clone(), &read)
}

/// `onto` with the fields an inspection fills (album artist, discs,
/// totals, compilation, sort names, audio, the inspection's version) taken
/// from `from`, and every other field as it was: the one list of them.
pub fn with_inspection(onto: pb::Song, from: &pb::Song) -> pb::Song {
    pb::Song {
        album_artist: from.album_artist.clone(),
        disc_number: from.disc_number,
        disc_total: from.disc_total,
        track_total: from.track_total,
        compilation: from.compilation,
        title_sort: from.title_sort.clone(),
        artist_sort: from.artist_sort.clone(),
        album_artist_sort: from.album_artist_sort.clone(),
        album_sort: from.album_sort.clone(),
        audio: from.audio.clone(),
        art: from.art.clone(),
        inspected: from.inspected,
        ..onto
    }
}

impl From<Audio> for pb::AudioProperties {
    fn from(a: Audio) -> Self {
        pb::AudioProperties {
            codec: a.codec,
            bitrate_kbps: a.bitrate_kbps,
            sample_rate: a.sample_rate,
            channels: a.channels,
            bit_depth: a.bit_depth,
        }
    }
}

/// Packets decoded to prove the codec data is sound.
const DECODE_PACKETS: usize = 64;

/// Tags read from a file. Every field is optional.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tags {
    pub title: Option<String>,
    pub artist: Option<String>,
    pub album: Option<String>,
    pub album_artist: Option<String>,
    pub track_number: Option<u32>,
    pub track_total: Option<u32>,
    pub disc_number: Option<u32>,
    pub disc_total: Option<u32>,
    pub year: Option<u32>,
    pub genre: Option<String>,
    /// Part of a compilation (TCMP, cpil, COMPILATION).
    pub compilation: bool,
    pub title_sort: Option<String>,
    pub artist_sort: Option<String>,
    pub album_artist_sort: Option<String>,
    pub album_sort: Option<String>,
}

/// The audio stream's properties.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Audio {
    /// Symphonia's short name of the codec ("mp3", "flac", "alac", ...).
    pub codec: String,
    pub bitrate_kbps: u32,
    pub sample_rate: u32,
    pub channels: u32,
    /// Bits per sample of a lossless stream.
    pub bit_depth: Option<u32>,
}

/// What an accepted file is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaInfo {
    /// MIME type served with the stream.
    pub mime_type: &'static str,
    /// Short name of the format, for messages.
    pub format: &'static str,
    pub duration_ms: u64,
    pub tags: Tags,
    pub audio: Audio,
    /// The cover picture embedded in the file, if it has one Rondo keeps.
    pub picture: Option<Picture>,
}

/// Who a song is filed under: its track artist, its album, and the
/// album's artist when it is another (ids and names).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filing {
    pub artist: (ArtistId, String),
    pub album: (AlbumId, String),
    pub album_artist: Option<(ArtistId, String)>,
}

/// The catalog record of an accepted file (`rondo.storage.v1.Song`): the
/// title, filed as `filing` says, with its tags and audio properties. The
/// one builder of it, for the gateway's upload and the node's direct
/// upload; the node fills in the size, the content hash and the upload
/// time when it commits the song.
pub fn song_record(id: SongId, title: String, filing: Filing, info: MediaInfo) -> pb::Song {
    let (artist_id, artist_name) = filing.artist;
    let (album_id, album_title) = filing.album;
    let album_artist = filing.album_artist.map(|(id, name)| pb::Artist {
        id: id.to_string(),
        name,
    });
    let album_artist_id = album_artist
        .as_ref()
        .map_or_else(|| artist_id.to_string(), |a| a.id.clone());
    let tags = info.tags;
    pb::Song {
        id: id.to_string(),
        title,
        artist: Some(pb::Artist {
            id: artist_id.to_string(),
            name: artist_name,
        }),
        album: Some(pb::Album {
            id: album_id.to_string(),
            title: album_title,
            artist_id: album_artist_id,
            year: tags.year,
            art: None,
        }),
        album_artist,
        track_number: tags.track_number,
        track_total: tags.track_total,
        disc_number: tags.disc_number,
        disc_total: tags.disc_total,
        compilation: tags.compilation,
        title_sort: tags.title_sort,
        artist_sort: tags.artist_sort,
        album_artist_sort: tags.album_artist_sort,
        album_sort: tags.album_sort,
        year: tags.year,
        genre: tags.genre,
        duration_ms: info.duration_ms,
        mime_type: info.mime_type.to_string(),
        audio: Some(info.audio.into()),
        inspected: INSPECTION,
        ..Default::default()
    }
}

fn unsupported(msg: impl Into<String>) -> Error {
    Error::Unsupported(msg.into())
}

/// A tag's text, trimmed and cut to [`MAX_NAME`] characters (a tag can be
/// megabytes long; nothing downstream needs more), if any is left.
fn clean(s: Option<std::borrow::Cow<'_, str>>) -> Option<String> {
    s.map(|s| s.trim().chars().take(MAX_NAME).collect::<String>())
        .map(|s| s.trim_end().to_string())
        .filter(|s| !s.is_empty())
}

/// The Windows Media (ASF) header object's GUID, which WMA files open with.
const ASF_GUID: [u8; 16] = [
    0x30, 0x26, 0xB2, 0x75, 0x8E, 0x66, 0xCF, 0x11, 0xA6, 0xD9, 0x00, 0xAA, 0x00, 0x62, 0xCE, 0x6C,
];

/// What a file that is not audio is, by its magic bytes ("JPEG image",
/// "PDF document"), for the refusal; `None` for anything that may be
/// audio. Checked before the audio probe, which finds an MPEG frame sync
/// inside many other files.
fn not_audio(head: &[u8]) -> Option<String> {
    if head.starts_with(&ASF_GUID) {
        return Some("Windows Media (ASF/WMA) file".into());
    }
    let found = infer::get(head)?;
    let kind = match found.matcher_type() {
        infer::MatcherType::Image => "image",
        infer::MatcherType::Archive => "archive",
        infer::MatcherType::Doc => "document",
        infer::MatcherType::Book => "e-book",
        infer::MatcherType::Font => "font",
        infer::MatcherType::App => "program",
        infer::MatcherType::Text => "text file",
        _ => return None,
    };
    Some(match found.extension() {
        "jpg" => format!("JPEG {kind}"),
        // infer files PDF among archives.
        "pdf" => "PDF document".to_string(),
        ext => format!("{} {kind}", ext.to_uppercase()),
    })
}

/// A tag's number (a track or disc count), if it is a plausible one.
fn count(n: Option<u32>) -> Option<u32> {
    n.filter(|n| (1..=9999).contains(n))
}

/// Inspects the file: recognises the format, reads tags, duration and
/// audio properties, and checks the audio stream end to end. Blocking; run
/// it off the async runtime.
pub fn inspect(file: &mut std::fs::File) -> Result<MediaInfo> {
    file.seek(SeekFrom::Start(0))
        .map_err(Error::io("rewind upload"))?;
    let mut head = [0u8; 64];
    let n = read_head(file, &mut head).map_err(Error::io("read upload"))?;
    if let Some(what) = not_audio(&head[..n]) {
        return Err(unsupported(format!("{what}, not audio")));
    }
    file.seek(SeekFrom::Start(0))
        .map_err(Error::io("rewind upload"))?;
    let probe = lofty::probe::Probe::new(BufReader::new(&mut *file))
        .guess_file_type()
        .map_err(Error::io("read upload"))?;
    let (mime_type, format, ext) = match probe.file_type() {
        Some(FileType::Mpeg) => ("audio/mpeg", "MP3", "mp3"),
        Some(FileType::Flac) => ("audio/flac", "FLAC", "flac"),
        Some(FileType::Vorbis) => ("audio/ogg", "Ogg Vorbis", "ogg"),
        Some(FileType::Opus) => ("audio/ogg; codecs=opus", "Ogg Opus", "opus"),
        Some(FileType::Mp4) => ("audio/mp4", "MP4", "m4a"),
        Some(FileType::Aac) => ("audio/aac", "AAC", "aac"),
        Some(FileType::Wav) => ("audio/wav", "WAV", "wav"),
        Some(FileType::Aiff) => ("audio/aiff", "AIFF", "aiff"),
        Some(other) => return Err(unsupported(format!("{other:?} files are not supported"))),
        None => return Err(unsupported("not a recognised audio format")),
    };
    let tagged = probe
        .read()
        .map_err(|e| unsupported(format!("{format}: {e}")))?;
    let mut tags = Tags::default();
    if let Some(tag) = tagged.primary_tag().or_else(|| tagged.first_tag()) {
        let text = |key: ItemKey| clean(tag.get_string(key).map(std::borrow::Cow::Borrowed));
        tags.title = clean(tag.title());
        tags.artist = clean(tag.artist());
        tags.album = clean(tag.album());
        tags.genre = clean(tag.genre());
        tags.album_artist = text(ItemKey::AlbumArtist);
        tags.track_number = count(tag.track());
        tags.track_total = count(tag.track_total());
        tags.disc_number = count(tag.disk());
        tags.disc_total = count(tag.disk_total());
        tags.year = tag.date().map(|d| u32::from(d.year));
        tags.compilation = tag
            .get_string(ItemKey::FlagCompilation)
            .is_some_and(|v| matches!(v.trim(), "1" | "true" | "True" | "TRUE"));
        tags.title_sort = text(ItemKey::TrackTitleSortOrder);
        tags.artist_sort = text(ItemKey::TrackArtistSortOrder);
        tags.album_artist_sort = text(ItemKey::AlbumArtistSortOrder);
        tags.album_sort = text(ItemKey::AlbumTitleSortOrder);
    }
    let picture = art::embedded(&tagged);
    let props = tagged.properties();
    let lofty_ms = u64::try_from(props.duration().as_millis()).unwrap_or(u64::MAX);
    let mut audio = Audio {
        codec: String::new(),
        bitrate_kbps: props
            .audio_bitrate()
            .or(props.overall_bitrate())
            .unwrap_or(0),
        sample_rate: props.sample_rate().unwrap_or(0),
        channels: props.channels().map_or(0, u32::from),
        bit_depth: props.bit_depth().map(u32::from),
    };

    file.seek(SeekFrom::Start(0))
        .map_err(Error::io("rewind upload"))?;
    let checked = check_stream(file, ext, format)?;
    audio.codec = checked.codec;
    if audio.sample_rate == 0 {
        audio.sample_rate = checked.sample_rate.unwrap_or(0);
    }
    if audio.channels == 0 {
        audio.channels = checked.channels.unwrap_or(0);
    }
    if audio.bit_depth.is_none() && is_lossless(&audio.codec) {
        audio.bit_depth = checked.bit_depth;
    }
    let duration_ms = if lofty_ms > 0 {
        lofty_ms
    } else {
        checked.duration_ms.unwrap_or(0)
    };
    Ok(MediaInfo {
        mime_type,
        format,
        duration_ms,
        tags,
        audio,
        picture,
    })
}

/// Whether a codec keeps every sample (bit depth means something).
fn is_lossless(codec: &str) -> bool {
    codec == "flac" || codec == "alac" || codec.starts_with("pcm")
}

/// Reads up to `buf.len()` bytes from the start of the file.
fn read_head(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    use std::io::Read;
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// What demuxing the whole stream found.
struct Checked {
    /// The duration the packets add up to, when the time base is known.
    duration_ms: Option<u64>,
    /// Symphonia's short name of the codec.
    codec: String,
    sample_rate: Option<u32>,
    channels: Option<u32>,
    bit_depth: Option<u32>,
}

/// Demuxes every packet and decodes the first ones.
fn check_stream(file: &mut std::fs::File, ext: &str, format: &str) -> Result<Checked> {
    let clone = file.try_clone().map_err(Error::io("reopen upload"))?;
    let mss = MediaSourceStream::new(Box::new(clone), Default::default());
    let mut hint = Hint::new();
    hint.with_extension(ext);
    let fmt_opts = FormatOptions {
        enable_gapless: false,
        ..Default::default()
    };
    let probed = symphonia::default::get_probe()
        .format(&hint, mss, &fmt_opts, &MetadataOptions::default())
        .map_err(|e| unsupported(format!("{format}: {e}")))?;
    let mut reader = probed.format;
    let track = reader
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
        .ok_or_else(|| unsupported(format!("{format}: no audio track")))?;
    let track_id = track.id;
    let params = track.codec_params.clone();
    let codec = symphonia::default::get_codecs()
        .get_codec(params.codec)
        .map_or_else(|| ext.to_string(), |d| d.short_name.to_string());
    // Symphonia has no Opus decoder: Opus files are demuxed but not decoded.
    let mut decoder =
        match symphonia::default::get_codecs().make(&params, &DecoderOptions::default()) {
            Ok(d) => Some(d),
            Err(SymError::Unsupported(_)) if ext == "opus" => None,
            Err(e) => return Err(unsupported(format!("{format}: {e}"))),
        };
    let (mut packets, mut frames, mut decoded) = (0u64, 0u64, 0usize);
    loop {
        let packet = match reader.next_packet() {
            Ok(p) => p,
            Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(SymError::ResetRequired) => break,
            Err(e) => return Err(unsupported(format!("{format}: corrupt stream: {e}"))),
        };
        if packet.track_id() != track_id {
            continue;
        }
        packets += 1;
        frames = frames.saturating_add(packet.dur);
        if decoded < DECODE_PACKETS
            && let Some(dec) = decoder.as_mut()
        {
            match dec.decode(&packet) {
                Ok(_) => decoded += 1,
                Err(SymError::DecodeError(e)) => {
                    return Err(unsupported(format!("{format}: corrupt audio: {e}")));
                }
                Err(e) => return Err(unsupported(format!("{format}: {e}"))),
            }
        }
    }
    if packets == 0 {
        return Err(unsupported(format!("{format}: no audio data")));
    }
    if let Some(declared) = params.n_frames {
        // A container that declares its length must deliver it; allow one
        // packet of slack for encoder padding.
        let slack = declared / 100 + 4096;
        if frames + slack < declared {
            return Err(unsupported(format!(
                "{format}: truncated: {frames} of {declared} declared frames present"
            )));
        }
    }
    Ok(Checked {
        duration_ms: params
            .sample_rate
            .filter(|r| *r > 0)
            .map(|rate| frames.saturating_mul(1000) / u64::from(rate)),
        codec,
        sample_rate: params.sample_rate,
        channels: params.channels.and_then(|c| u32::try_from(c.count()).ok()),
        bit_depth: params.bits_per_sample,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn wav(seconds: f32) -> Vec<u8> {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 8000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut cur = std::io::Cursor::new(Vec::new());
        let mut w = hound::WavWriter::new(&mut cur, spec).unwrap();
        for i in 0..(8000.0 * seconds) as u32 {
            w.write_sample(((i as f32 * 0.05).sin() * 8000.0) as i16)
                .unwrap();
        }
        w.finalize().unwrap();
        cur.into_inner()
    }

    fn check(bytes: &[u8]) -> Result<MediaInfo> {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        inspect(&mut f)
    }

    #[test]
    fn names_prefer_arguments_then_tags_then_the_file_name() {
        let tags = Tags {
            title: Some("Tagged".into()),
            artist: Some("Tag Artist".into()),
            ..Tags::default()
        };
        let given = Overrides {
            artist: Some("  Given  ".into()),
            ..Overrides::default()
        };
        let n = names(&tags, given.checked().unwrap(), Some("file.wav"));
        assert_eq!((n.title.as_str(), n.artist.as_str()), ("Tagged", "Given"));
        assert_eq!(n.album, "Unknown Album");
        let n = names(
            &Tags::default(),
            Overrides::default(),
            Some("dir/My Song.flac"),
        );
        assert_eq!(n.title, "My Song");
        let long = "x".repeat(MAX_NAME + 1);
        let cut = names(
            &Tags {
                title: Some(long.clone()),
                ..Tags::default()
            },
            Overrides::default(),
            None,
        );
        assert_eq!(cut.title.chars().count(), MAX_NAME);
        for bad in [String::new(), "   ".into(), long] {
            let o = Overrides {
                title: Some(bad),
                ..Overrides::default()
            };
            assert!(matches!(o.checked(), Err(Error::BadName(_))));
        }
    }

    #[test]
    fn accepts_wav_and_measures_it() {
        let info = check(&wav(2.0)).unwrap();
        assert_eq!(info.mime_type, "audio/wav");
        assert!(
            (1990..=2010).contains(&info.duration_ms),
            "{}",
            info.duration_ms
        );
    }

    #[test]
    fn every_recognised_format_has_an_allowed_type() {
        for t in AUDIO_TYPES {
            assert!(is_audio_type(t));
        }
        assert!(!is_audio_type("text/html"));
        assert!(!is_audio_type("audio/wav; x=<script>"));
    }

    #[test]
    fn other_files_are_refused_by_what_they_are() {
        let mut jpeg = vec![
            0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0,
        ];
        jpeg.extend(std::iter::repeat_n(0xFFu8, 4096));
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        png.extend([0u8; 64]);
        let mut wma = ASF_GUID.to_vec();
        wma.extend([0u8; 64]);
        let mut pdf = b"%PDF-1.7\n".to_vec();
        pdf.extend([b' '; 64]);
        for (bytes, what) in [
            (jpeg, "JPEG image"),
            (png, "PNG image"),
            (wma, "Windows Media (ASF/WMA) file"),
            (pdf, "PDF document"),
        ] {
            let err = check(&bytes).unwrap_err();
            assert!(
                matches!(&err, Error::Unsupported(m) if m == &format!("{what}, not audio")),
                "{what}: {err}"
            );
        }
    }

    #[test]
    fn wav_properties_are_read() {
        let info = check(&wav(1.0)).unwrap();
        assert_eq!(
            info.audio,
            Audio {
                codec: "pcm_s16le".into(),
                bitrate_kbps: 128,
                sample_rate: 8000,
                channels: 1,
                bit_depth: Some(16),
            }
        );
    }

    #[test]
    fn the_album_artist_is_tagged_or_various_for_a_compilation() {
        let tagged = |album_artist: Option<&str>, compilation: bool| Tags {
            artist: Some("Guest".into()),
            album_artist: album_artist.map(str::to_string),
            compilation,
            ..Tags::default()
        };
        let owner = |t: Tags| names(&t, Overrides::default(), None).album_artist;
        assert_eq!(owner(tagged(Some("Host"), false)), Some("Host".into()));
        assert_eq!(owner(tagged(Some("Host"), true)), Some("Host".into()));
        assert_eq!(owner(tagged(None, true)), Some(VARIOUS_ARTISTS.to_string()));
        assert_eq!(owner(tagged(None, false)), None);
        assert_eq!(
            owner(tagged(Some(" GUEST "), false)),
            None,
            "the track artist"
        );
    }

    #[test]
    fn refuses_garbage_empty_and_truncated() {
        for bad in [&b""[..], b"hello, this is not audio at all", &[0u8; 4096]] {
            let err = check(bad).unwrap_err();
            assert!(matches!(err, Error::Unsupported(_)), "{err}");
        }
        let full = wav(2.0);
        let err = check(&full[..full.len() / 2]).unwrap_err();
        assert!(matches!(err, Error::Unsupported(_)), "{err}");
    }
}
