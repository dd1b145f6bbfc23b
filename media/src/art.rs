//! Cover art: the picture embedded in an audio file, an image an
//! administrator gives an album, and the resized variants the nodes serve.
//!
//! A picture is kept as it came (its bytes are a content-addressed blob
//! like audio); what is served at a size is a JPEG whose longer side is
//! that size, made once by the node that serves it and cached. Only JPEG,
//! PNG, WebP and GIF pictures are kept, recognised by their bytes (never
//! by the MIME type a tag claims), and only if their header is sound and
//! their dimensions plausible; a broken picture is dropped, not the song.

use std::io::Cursor;

use image::{ImageDecoder, ImageFormat, ImageReader, Limits};

use crate::{Error, Result};

/// Largest picture kept, embedded or uploaded.
pub const MAX_ART_BYTES: usize = 16 * 1024 * 1024;

/// Largest width or height of a picture kept.
pub const MAX_ART_SIDE: u32 = 10_000;

/// Most pixels a picture kept may have (8000 × 5000): what decoding it
/// for a resize may cost is bounded (RGBA, 160 MB).
pub const MAX_ART_PIXELS: u64 = 40_000_000;

/// The sizes art is served at (the longer side, in pixels). A request for
/// another size gets the smallest of these at least as large, or the
/// largest; never a picture larger than the original.
pub const ART_SIZES: [u32; 5] = [64, 128, 300, 600, 1200];

/// JPEG quality of the served variants.
const VARIANT_QUALITY: u8 = 85;

/// A picture as it is kept.
#[derive(Clone, PartialEq, Eq)]
pub struct Picture {
    /// `image/jpeg`, `image/png`, `image/webp` or `image/gif`.
    pub mime: &'static str,
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

impl std::fmt::Debug for Picture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Picture")
            .field("mime", &self.mime)
            .field("width", &self.width)
            .field("height", &self.height)
            .field("bytes", &self.data.len())
            .finish()
    }
}

/// The variant served for a requested size.
pub fn variant_size(requested: u32) -> u32 {
    ART_SIZES
        .into_iter()
        .find(|s| *s >= requested)
        .unwrap_or(ART_SIZES[ART_SIZES.len() - 1])
}

fn format_of(bytes: &[u8]) -> Option<(ImageFormat, &'static str)> {
    let kind = infer::get(bytes)?;
    Some(match kind.mime_type() {
        "image/jpeg" => (ImageFormat::Jpeg, "image/jpeg"),
        "image/png" => (ImageFormat::Png, "image/png"),
        "image/webp" => (ImageFormat::WebP, "image/webp"),
        "image/gif" => (ImageFormat::Gif, "image/gif"),
        _ => return None,
    })
}

/// The MIME type of a kept picture's bytes, if they are one.
pub fn check_mime(bytes: &[u8]) -> Option<&'static str> {
    format_of(bytes).map(|(_, mime)| mime)
}

fn limits() -> Limits {
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_ART_SIDE);
    limits.max_image_height = Some(MAX_ART_SIDE);
    limits.max_alloc = Some(256 * 1024 * 1024);
    limits
}

/// Checks that `bytes` are a picture Rondo keeps: a JPEG, PNG, WebP or GIF
/// by its magic bytes, within [`MAX_ART_BYTES`], [`MAX_ART_SIDE`] and
/// [`MAX_ART_PIXELS`], that decodes whole within the decoder's limits (so
/// that every size of it can be made later). Refused as `Unsupported`
/// naming what was found. Blocking and CPU-bound.
pub fn check_picture(bytes: Vec<u8>) -> Result<Picture> {
    if bytes.len() > MAX_ART_BYTES {
        return Err(Error::Unsupported(format!(
            "a picture of {} bytes; at most {MAX_ART_BYTES} are kept",
            bytes.len()
        )));
    }
    let Some((format, mime)) = format_of(&bytes) else {
        let found = match infer::get(&bytes) {
            Some(k) => format!("{} ({})", k.mime_type(), k.extension()),
            None => "no recognised format".to_string(),
        };
        return Err(Error::Unsupported(format!(
            "not a JPEG, PNG, WebP or GIF picture: {found}"
        )));
    };
    let (width, height) = {
        let mut reader = ImageReader::with_format(Cursor::new(bytes.as_slice()), format);
        reader.limits(limits());
        reader
            .into_decoder()
            .map_err(|e| Error::Unsupported(format!("a broken {mime} picture: {e}")))?
            .dimensions()
    };
    if width == 0
        || height == 0
        || width > MAX_ART_SIDE
        || height > MAX_ART_SIDE
        || u64::from(width) * u64::from(height) > MAX_ART_PIXELS
    {
        return Err(Error::Unsupported(format!(
            "a picture of {width}×{height} pixels; sides of 1 to {MAX_ART_SIDE} and at most {MAX_ART_PIXELS} pixels are kept"
        )));
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes.as_slice()), format);
    reader.limits(limits());
    reader
        .decode()
        .map_err(|e| Error::Unsupported(format!("a broken {mime} picture: {e}")))?;
    Ok(Picture {
        mime,
        width,
        height,
        data: bytes,
    })
}

/// The picture to keep from a file's tags: the front cover if there is
/// one, else the first picture; `None` if there is none or it is not one
/// Rondo keeps (the song is kept without art).
pub(crate) fn embedded(tagged: &lofty::file::TaggedFile) -> Option<Picture> {
    use lofty::picture::PictureType;
    use lofty::prelude::*;
    let pictures: Vec<&lofty::picture::Picture> =
        tagged.tags().iter().flat_map(|t| t.pictures()).collect();
    let chosen = pictures
        .iter()
        .find(|p| p.pic_type() == PictureType::CoverFront)
        .or_else(|| pictures.first())?;
    // A picture that is not one Rondo keeps is dropped: the song is kept
    // without art.
    check_picture(chosen.data().to_vec()).ok()
}

/// The variant of `picture` whose longer side is `size` (or the
/// original's, if smaller): a JPEG. Blocking and CPU-bound.
pub fn resize(bytes: &[u8], size: u32) -> Result<Vec<u8>> {
    let Some((format, mime)) = format_of(bytes) else {
        return Err(Error::Unsupported("not a picture".into()));
    };
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    reader.limits(limits());
    let image = reader
        .decode()
        .map_err(|e| Error::Unsupported(format!("a broken {mime} picture: {e}")))?;
    let longer = image.width().max(image.height());
    let image = if longer > size {
        image.resize(size, size, image::imageops::FilterType::Lanczos3)
    } else {
        image
    };
    let rgb = image.to_rgb8();
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, VARIANT_QUALITY)
        .encode_image(&rgb)
        .map_err(|e| Error::Unsupported(format!("encoding a variant: {e}")))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 128]));
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn variants_are_the_smallest_size_at_least_as_large() {
        assert_eq!(variant_size(1), 64);
        assert_eq!(variant_size(64), 64);
        assert_eq!(variant_size(65), 128);
        assert_eq!(variant_size(300), 300);
        assert_eq!(variant_size(5000), 1200);
    }

    #[test]
    fn a_picture_is_resized_to_its_longer_side_and_never_enlarged() {
        let p = check_picture(png(400, 200)).unwrap();
        assert_eq!((p.mime, p.width, p.height), ("image/png", 400, 200));
        let small = image::load_from_memory(&resize(&p.data, 64).unwrap()).unwrap();
        assert_eq!((small.width(), small.height()), (64, 32));
        let same = image::load_from_memory(&resize(&p.data, 600).unwrap()).unwrap();
        assert_eq!((same.width(), same.height()), (400, 200));
    }

    #[test]
    fn what_is_not_a_picture_is_named() {
        let e = check_picture(b"%PDF-1.4 not a picture at all".to_vec()).unwrap_err();
        assert!(e.to_string().contains("application/pdf"), "{e}");
        let mut broken = png(10, 10);
        broken.truncate(20);
        let e = check_picture(broken).unwrap_err();
        assert!(e.to_string().contains("broken image/png"), "{e}");
        // A sound header over cut data: it would not resize later.
        let mut cut = png(200, 200);
        cut.truncate(cut.len() - 40);
        let e = check_picture(cut).unwrap_err();
        assert!(e.to_string().contains("broken image/png"), "{e}");
        let e = check_picture(vec![0; MAX_ART_BYTES + 1]).unwrap_err();
        assert!(e.to_string().contains("at most"), "{e}");
    }
}
