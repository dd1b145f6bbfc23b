//! Demo audio, synthesised in Rust: short tagged WAV tunes, so that a fresh
//! deployment has a catalog to browse and play without downloading anything.

use std::f32::consts::TAU;
use std::path::Path;

use lofty::config::WriteOptions;
use lofty::prelude::*;
use lofty::tag::{Tag, TagType};

use crate::error::{Error, Result};

/// Sample rate of the demo audio.
pub const SAMPLE_RATE: u32 = 22_050;

/// Tags of one demo song.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DemoSong {
    pub title: String,
    pub artist: String,
    pub album: String,
    pub track: u32,
    pub year: u32,
    pub genre: String,
}

/// The demo catalog: 20 songs on 5 albums by 3 artists.
pub fn catalog() -> Vec<DemoSong> {
    let albums: [(&str, &str, u32, &str, &[&str]); 5] = [
        (
            "Ada Sine",
            "Pure Tones",
            2019,
            "Ambient",
            &["Morning Carrier", "Four Forty", "Slow Beat", "Octave Drift"],
        ),
        (
            "Ada Sine",
            "Harmonic Series",
            2021,
            "Ambient",
            &["Overtone", "Second Partial", "Fifth Above", "Resonance"],
        ),
        (
            "The Square Waves",
            "Duty Cycle",
            2020,
            "Chiptune",
            &["Fifty Percent", "Pulse Width", "Aliasing", "Nyquist"],
        ),
        (
            "The Square Waves",
            "Low Pass",
            2023,
            "Chiptune",
            &["Cutoff", "Roll Off", "Ripple", "Passband"],
        ),
        (
            "Fourier & Sons",
            "Transforms",
            2022,
            "Electronic",
            &[
                "Window Function",
                "Spectral Leak",
                "Zero Padding",
                "Inverse",
            ],
        ),
    ];
    let mut out = Vec::new();
    for (artist, album, year, genre, titles) in albums {
        for (i, title) in titles.iter().enumerate() {
            out.push(DemoSong {
                title: (*title).to_string(),
                artist: artist.to_string(),
                album: album.to_string(),
                track: i as u32 + 1,
                year,
                genre: genre.to_string(),
            });
        }
    }
    out
}

/// 16-bit mono PCM WAV of a little tune; `seed` picks the melody.
pub fn tune_wav(seconds: f32, seed: u64) -> Result<Vec<u8>> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: SAMPLE_RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut cursor = std::io::Cursor::new(Vec::new());
    let mut writer =
        hound::WavWriter::new(&mut cursor, spec).map_err(|e| Error::Audio(e.to_string()))?;
    // A pentatonic scale from a seed-dependent root.
    let root = 196.0 * 2f32.powf((seed % 7) as f32 / 12.0);
    let steps = [0.0, 2.0, 4.0, 7.0, 9.0, 12.0, 14.0, 16.0];
    let note_len = (SAMPLE_RATE as f32 * 0.25) as u32;
    let total = (SAMPLE_RATE as f32 * seconds) as u32;
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut freq = root;
    for i in 0..total {
        let pos = i % note_len;
        if pos == 0 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let step = steps[((state >> 33) % steps.len() as u64) as usize];
            freq = root * 2f32.powf(step / 12.0);
        }
        let t = i as f32 / SAMPLE_RATE as f32;
        let env = {
            let p = pos as f32 / note_len as f32;
            (p * 20.0).min(1.0) * (1.0 - p).powf(1.5)
        };
        let v = (TAU * freq * t).sin() * 0.6
            + (TAU * 2.0 * freq * t).sin() * 0.25
            + (TAU * 3.0 * freq * t).sin() * 0.1;
        let sample = (v * env * 0.5 * i16::MAX as f32) as i16;
        writer
            .write_sample(sample)
            .map_err(|e| Error::Audio(e.to_string()))?;
    }
    writer.finalize().map_err(|e| Error::Audio(e.to_string()))?;
    Ok(cursor.into_inner())
}

/// Side of a demo cover, in pixels.
const COVER_SIDE: u32 = 400;

/// A demo album's cover: a PNG gradient between two colours drawn from the
/// album's name (the same name, the same picture).
pub fn cover(album: &str) -> Result<Vec<u8>> {
    let seed = blake3::hash(album.as_bytes());
    let b = seed.as_bytes();
    let (from, to) = ([b[0], b[1], b[2]], [b[3], b[4], b[5]]);
    let img = image::RgbImage::from_fn(COVER_SIDE, COVER_SIDE, |x, y| {
        let t = (x + y) as f32 / (2 * COVER_SIDE) as f32;
        let mix = |i: usize| (f32::from(from[i]) * (1.0 - t) + f32::from(to[i]) * t) as u8;
        image::Rgb([mix(0), mix(1), mix(2)])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .map_err(|e| Error::Audio(format!("draw the cover of {album}: {e}")))?;
    Ok(out.into_inner())
}

/// Writes a tagged demo song (WAV with an ID3v2 tag, and `cover` as its
/// front cover if given) to `path`.
pub fn write_song(
    path: &Path,
    song: &DemoSong,
    seconds: f32,
    seed: u64,
    cover: Option<Vec<u8>>,
) -> Result<()> {
    std::fs::write(path, tune_wav(seconds, seed)?)
        .map_err(Error::io(format!("write {}", path.display())))?;
    let mut tag = Tag::new(TagType::Id3v2);
    tag.set_title(song.title.clone());
    tag.set_artist(song.artist.clone());
    tag.set_album(song.album.clone());
    tag.set_genre(song.genre.clone());
    tag.set_track(song.track);
    tag.set_date(lofty::tag::items::Timestamp {
        year: song.year as u16,
        ..Default::default()
    });
    if let Some(png) = cover {
        tag.push_picture(
            lofty::picture::Picture::unchecked(png)
                .pic_type(lofty::picture::PictureType::CoverFront)
                .mime_type(lofty::picture::MimeType::Png)
                .build(),
        );
    }
    tag.save_to_path(path, WriteOptions::default())
        .map_err(|e| Error::Audio(format!("tag {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_shape() {
        let c = catalog();
        assert_eq!(c.len(), 20);
        let artists: std::collections::HashSet<_> = c.iter().map(|s| &s.artist).collect();
        let albums: std::collections::HashSet<_> = c.iter().map(|s| &s.album).collect();
        assert!(artists.len() >= 3 && albums.len() >= 4);
    }

    #[test]
    fn tagged_wav_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.wav");
        let song = &catalog()[5];
        write_song(&path, song, 1.0, 5, Some(cover(&song.album).unwrap())).unwrap();
        let tagged = lofty::read_from_path(&path).unwrap();
        let tag = tagged.primary_tag().unwrap();
        assert_eq!(tag.title().as_deref(), Some(song.title.as_str()));
        assert_eq!(tag.track(), Some(song.track));
        assert_eq!(tag.date().map(|d| u32::from(d.year)), Some(song.year));
        assert_eq!(tagged.properties().duration().as_millis(), 1000);
        let picture = &tag.pictures()[0];
        assert_eq!(picture.data(), cover(&song.album).unwrap().as_slice());
        assert_ne!(cover("one album").unwrap(), cover("another").unwrap());
    }
}
