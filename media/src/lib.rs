//! Recognises and checks uploaded audio, and reads its tags and duration.
//!
//! The format is recognised from the bytes (lofty's content probe), never
//! from the file name. The whole stream is then demuxed with symphonia and its
//! first packets decoded, so that truncated or corrupt files are refused
//! before anything is stored. Demuxing reads every packet header but decodes
//! only a few packets, which keeps large uploads cheap.

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
pub const AUDIO_TYPES: [&str; 7] = [
    "audio/mpeg",
    "audio/flac",
    "audio/ogg",
    "audio/ogg; codecs=opus",
    "audio/mp4",
    "audio/aac",
    "audio/wav",
];

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
}

/// Title, artist and album for an upload: the checked overrides first, then
/// the file's tags, then (for the title) the file name's stem, then
/// placeholders; cut to [`MAX_NAME`] characters.
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
    pub track_number: Option<u32>,
    pub year: Option<u32>,
    pub genre: Option<String>,
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
}

/// The catalog record of an accepted file (`rondo.storage.v1.Song`): the
/// title, filed under `artist` and `album` (ids and names), with its tags
/// and audio properties. The one builder of it, for the gateway's upload
/// and the node's direct upload; the node fills in the size, the content
/// hash and the upload time when it commits the song.
pub fn song_record(
    id: SongId,
    title: String,
    artist: (ArtistId, String),
    album: (AlbumId, String),
    info: MediaInfo,
) -> pb::Song {
    let (artist_id, artist_name) = artist;
    let (album_id, album_title) = album;
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
            artist_id: artist_id.to_string(),
            year: tags.year,
        }),
        track_number: tags.track_number,
        year: tags.year,
        genre: tags.genre,
        duration_ms: info.duration_ms,
        mime_type: info.mime_type.to_string(),
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

/// Inspects the file: recognises the format, reads tags and duration, and
/// checks the audio stream end to end. Blocking; run it off the async runtime.
pub fn inspect(file: &mut std::fs::File) -> Result<MediaInfo> {
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
        Some(FileType::Mp4) => ("audio/mp4", "MP4/AAC", "m4a"),
        Some(FileType::Aac) => ("audio/aac", "AAC", "aac"),
        Some(FileType::Wav) => ("audio/wav", "WAV", "wav"),
        Some(other) => return Err(unsupported(format!("{other:?} files are not supported"))),
        None => return Err(unsupported("not a recognised audio format")),
    };
    let tagged = probe
        .read()
        .map_err(|e| unsupported(format!("{format}: {e}")))?;
    let mut tags = Tags::default();
    if let Some(tag) = tagged.primary_tag().or_else(|| tagged.first_tag()) {
        tags.title = clean(tag.title());
        tags.artist = clean(tag.artist());
        tags.album = clean(tag.album());
        tags.genre = clean(tag.genre());
        tags.track_number = tag.track();
        tags.year = tag.date().map(|d| u32::from(d.year));
    }
    let lofty_ms = u64::try_from(tagged.properties().duration().as_millis()).unwrap_or(u64::MAX);

    file.seek(SeekFrom::Start(0))
        .map_err(Error::io("rewind upload"))?;
    let checked_ms = check_stream(file, ext, format)?;
    let duration_ms = if lofty_ms > 0 {
        lofty_ms
    } else {
        checked_ms.unwrap_or(0)
    };
    Ok(MediaInfo {
        mime_type,
        format,
        duration_ms,
        tags,
    })
}

/// Demuxes every packet and decodes the first ones. Returns the duration the
/// packets add up to, when the time base is known.
fn check_stream(file: &mut std::fs::File, ext: &str, format: &str) -> Result<Option<u64>> {
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
    Ok(params
        .sample_rate
        .filter(|r| *r > 0)
        .map(|rate| frames.saturating_mul(1000) / u64::from(rate)))
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
