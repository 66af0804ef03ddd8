//! Pack files: many encrypted blobs and an encrypted table of contents.
//!
//! ```text
//! "CAIRNPAK" | u32 version
//! blob*            each sealed(encoding byte || payload), see compress
//! sealed(header)   PackHeader, associated data = the first 12 bytes
//! u32 header length (sealed bytes) | "CAIRNHDR"
//! ```
//! The header lists every blob with its offset, so the index can be rebuilt
//! from packs alone. A pack holds only data blobs or only tree blobs. The
//! pack's name is the BLAKE3 hash of all its bytes.

use serde::{Deserialize, Serialize};

use crate::backend::FileSink;
use crate::codec;
use crate::compress;
use crate::crypto::{MasterKey, NONCE_LEN, SEAL_OVERHEAD, TAG_LEN};
use crate::error::{Error, Result};
use crate::id::{file_hash, BlobId, PackId};

const MAGIC: &[u8; 8] = b"CAIRNPAK";
const TRAILER_MAGIC: &[u8; 8] = b"CAIRNHDR";
/// Format version of pack files.
pub const VERSION: u32 = 1;
/// Bytes before the first blob.
pub const HEADER_LEN: usize = 12;
const TRAILER_LEN: usize = 12;
/// Largest plaintext blob accepted (chunks are at most 16 MiB; trees are
/// bounded by this too).
pub const MAX_BLOB: u32 = 256 << 20;
/// Largest stored (sealed) blob: the largest plaintext stored raw, behind
/// its encoding byte, with nonce and tag. A writer stores a blob raw
/// rather than in a frame longer than the plaintext, so a longer `length`
/// in a pack header or an index entry is damage, caught before anything
/// is read or allocated by it.
pub const MAX_SEALED: u32 = MAX_BLOB + 1 + SEAL_OVERHEAD as u32;

/// What a blob holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BlobKind {
    /// A chunk of file content.
    Data,
    /// An encoded directory tree.
    Tree,
}

impl BlobKind {
    /// The byte stored in index tables.
    pub fn to_byte(self) -> u8 {
        match self {
            BlobKind::Data => 0,
            BlobKind::Tree => 1,
        }
    }
    /// Parses the index byte.
    pub fn from_byte(b: u8) -> Option<BlobKind> {
        match b {
            0 => Some(BlobKind::Data),
            1 => Some(BlobKind::Tree),
            _ => None,
        }
    }
}

/// One blob's place in its pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackEntry {
    /// Blob id.
    pub id: BlobId,
    /// Offset of the sealed blob from the start of the pack file.
    pub offset: u32,
    /// Length of the sealed blob.
    pub length: u32,
    /// Length of the blob's plaintext content (before encoding).
    pub raw_length: u32,
}

/// The table of contents at the end of a pack.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PackHeader {
    /// Version of this structure.
    pub version: u32,
    /// Kind of every blob in the pack.
    pub kind: BlobKind,
    /// Blobs in file order.
    pub entries: Vec<PackEntry>,
}

/// Accumulates sealed blobs into one pack: in memory, or streamed to a
/// [`FileSink`] so that no pack is ever held whole.
pub struct PackWriter {
    kind: BlobKind,
    out: Out,
    len: usize,
    entries: Vec<PackEntry>,
    raw_bytes: u64,
}

enum Out {
    Buffer(Vec<u8>),
    /// The sink and the running hash of what went into it (the pack id).
    Sink(Box<dyn FileSink>, Box<blake3::Hasher>),
}

/// A finished pack ready to store.
pub struct FinishedPack {
    /// Name of the pack.
    pub id: PackId,
    /// All bytes of the pack file; empty for a streamed pack.
    pub bytes: Vec<u8>,
    /// The blobs it holds.
    pub header: PackHeader,
    /// For a streamed pack: the sink holding its bytes, to be committed
    /// under the pack's name.
    pub sink: Option<Box<dyn FileSink>>,
}

impl PackWriter {
    /// An empty pack for blobs of `kind`.
    pub fn new(kind: BlobKind) -> PackWriter {
        PackWriter::with_buffer(kind, Vec::new())
    }

    /// An empty pack building into `buf` (cleared first), so a caller can
    /// recycle the memory of packs already written instead of faulting in
    /// fresh pages for every pack.
    pub fn with_buffer(kind: BlobKind, mut buf: Vec<u8>) -> PackWriter {
        buf.clear();
        buf.extend_from_slice(&codec::header(MAGIC, VERSION));
        PackWriter {
            kind,
            len: buf.len(),
            out: Out::Buffer(buf),
            entries: Vec::new(),
            raw_bytes: 0,
        }
    }

    /// An empty pack written straight to `sink` as blobs are added.
    pub fn streaming(kind: BlobKind, mut sink: Box<dyn FileSink>) -> Result<PackWriter> {
        let head = codec::header(MAGIC, VERSION);
        sink.append(&head)?;
        let mut hasher = Box::new(blake3::Hasher::new());
        hasher.update(&head);
        Ok(PackWriter {
            kind,
            len: head.len(),
            out: Out::Sink(sink, hasher),
            entries: Vec::new(),
            raw_bytes: 0,
        })
    }

    /// Moves a pack building in memory to `sink`: what it holds is
    /// written there and later blobs stream. Returns the freed buffer for
    /// reuse; a pack already streaming keeps its sink and drops `sink`.
    pub fn spill(&mut self, mut sink: Box<dyn FileSink>) -> Result<Vec<u8>> {
        let Out::Buffer(buf) = &mut self.out else {
            return Ok(Vec::new());
        };
        sink.append(buf)?;
        let mut hasher = Box::new(blake3::Hasher::new());
        hasher.update(buf);
        let buf = std::mem::take(buf);
        self.out = Out::Sink(sink, hasher);
        Ok(buf)
    }

    /// Bytes so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the pack streams to a sink (a local directory) instead of
    /// building in memory.
    pub fn is_streamed(&self) -> bool {
        matches!(self.out, Out::Sink(..))
    }

    /// True when no blob has been added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn append(&mut self, bytes: &[u8]) -> Result<()> {
        match &mut self.out {
            Out::Buffer(buf) => buf.extend_from_slice(bytes),
            Out::Sink(sink, hasher) => {
                sink.append(bytes)?;
                hasher.update(bytes);
            }
        }
        self.len += bytes.len();
        Ok(())
    }

    /// Appends an already sealed blob. Fails only when a streamed pack
    /// cannot be written; the pack is then unusable.
    pub fn add_sealed(&mut self, id: BlobId, sealed: &[u8], raw_length: u32) -> Result<()> {
        let offset = self.len as u32;
        self.append(sealed)?;
        self.entries.push(PackEntry {
            id,
            offset,
            length: sealed.len() as u32,
            raw_length,
        });
        self.raw_bytes += u64::from(raw_length);
        Ok(())
    }

    /// Appends the header and trailer; returns the pack.
    pub fn finish(mut self, key: &MasterKey) -> Result<FinishedPack> {
        let header = PackHeader {
            version: VERSION,
            kind: self.kind,
            entries: std::mem::take(&mut self.entries),
        };
        // Encoded and sealed in one buffer: a pack of many small blobs has
        // a header of megabytes (44 bytes a blob), held once, not twice.
        let room = SEAL_OVERHEAD + codec::encoded_len(&header) + TRAILER_LEN;
        let mut tail = Vec::with_capacity(room);
        tail.resize(NONCE_LEN, 0);
        codec::encode_into(&header, &mut tail);
        tail.resize(tail.len() + TAG_LEN, 0);
        key.seal_in_place(&codec::header(MAGIC, VERSION), &mut tail);
        let sealed_len = tail.len() as u32;
        tail.extend_from_slice(&sealed_len.to_le_bytes());
        tail.extend_from_slice(TRAILER_MAGIC);
        self.append(&tail)?;
        Ok(match self.out {
            Out::Buffer(bytes) => FinishedPack {
                id: PackId(file_hash(&bytes)),
                bytes,
                header,
                sink: None,
            },
            Out::Sink(sink, hasher) => FinishedPack {
                id: PackId(*hasher.finalize().as_bytes()),
                bytes: Vec::new(),
                header,
                sink: Some(sink),
            },
        })
    }
}

/// Where the sealed header sits in a pack of `len` bytes, from its trailer.
pub fn header_range(trailer: &[u8], len: u64, what: &str) -> Result<(u64, usize)> {
    if len < (HEADER_LEN + TRAILER_LEN) as u64 || trailer.len() != TRAILER_LEN {
        return Err(Error::corrupt(what, "too short to be a pack"));
    }
    if &trailer[4..] != TRAILER_MAGIC {
        return Err(Error::corrupt(what, "trailer magic missing (truncated?)"));
    }
    let hlen = u32::from_le_bytes(trailer[..4].try_into().expect("4 bytes")) as u64;
    let limit = len - (HEADER_LEN + TRAILER_LEN) as u64;
    if hlen > limit || hlen < SEAL_OVERHEAD as u64 {
        return Err(Error::corrupt(
            what,
            format!("header length {hlen} out of range"),
        ));
    }
    Ok((len - TRAILER_LEN as u64 - hlen, hlen as usize))
}

/// The trailer size, for readers that fetch it first.
pub const fn trailer_len() -> usize {
    TRAILER_LEN
}

/// Decodes the header of a whole pack file, checking every entry lies
/// between the file header and the pack header.
pub fn decode_header(pack: &[u8], key: &MasterKey, what: &str) -> Result<PackHeader> {
    codec::check_header(pack, MAGIC, VERSION, what)?;
    let len = pack.len() as u64;
    if pack.len() < HEADER_LEN + TRAILER_LEN {
        return Err(Error::corrupt(what, "too short to be a pack"));
    }
    let (start, hlen) = header_range(&pack[pack.len() - TRAILER_LEN..], len, what)?;
    let start = start as usize;
    decode_sealed_header(&pack[start..start + hlen], start as u64, key, what)
}

/// Reads and decodes the header of the pack `name` of `len` bytes in
/// `backend` with the checks of [`decode_header`], in small ranged reads
/// (its file header, trailer and sealed header) rather than reading the
/// whole pack: on an object store a pack's blobs are never downloaded for
/// it.
pub fn read_header(
    backend: &dyn crate::backend::Backend,
    name: &str,
    len: u64,
    key: &MasterKey,
    what: &str,
) -> Result<PackHeader> {
    use crate::backend::FileKind;
    if len < (HEADER_LEN + TRAILER_LEN) as u64 {
        return Err(Error::corrupt(what, "too short to be a pack"));
    }
    let head = backend.read_range(FileKind::Pack, name, 0, HEADER_LEN)?;
    codec::check_header(&head, MAGIC, VERSION, what)?;
    let trailer =
        backend.read_range(FileKind::Pack, name, len - TRAILER_LEN as u64, TRAILER_LEN)?;
    let (start, hlen) = header_range(&trailer, len, what)?;
    let sealed = backend.read_range(FileKind::Pack, name, start, hlen)?;
    decode_sealed_header(&sealed, start, key, what)
}

/// Decodes a sealed header that starts at `start` in its pack.
pub fn decode_sealed_header(
    sealed: &[u8],
    start: u64,
    key: &MasterKey,
    what: &str,
) -> Result<PackHeader> {
    let plain = key.open(sealed, &codec::header(MAGIC, VERSION), what)?;
    let header: PackHeader = codec::decode(&plain, what)?;
    if header.version != VERSION {
        return Err(Error::corrupt(
            what,
            format!("header version {}", header.version),
        ));
    }
    let mut end = HEADER_LEN as u64;
    for e in &header.entries {
        let off = u64::from(e.offset);
        // An entry ends where its `u32` offset and length can say, so
        // readers may add them as such (a hostile pack over 4 GiB could
        // otherwise place one past that).
        let past = off + u64::from(e.length);
        if off < end
            || past > start
            || past > u64::from(u32::MAX)
            || e.length > MAX_SEALED
            || e.raw_length > MAX_BLOB
        {
            return Err(Error::corrupt(
                what,
                format!("entry for blob {} out of bounds", e.id.short()),
            ));
        }
        end = past;
    }
    Ok(header)
}

/// Seals a blob's plaintext in `buf`, a buffer reused from blob to blob,
/// and returns the sealed bytes, a prefix of it. Compressible plaintext is
/// compressed straight into `buf` and encrypted there in place;
/// incompressible plaintext is encrypted from where it lies, never copied
/// first. `buf` is only grown, never cleared or zeroed: every byte
/// returned is written by this call.
pub fn seal_blob<'b>(
    key: &MasterKey,
    plaintext: &[u8],
    level: i32,
    buf: &'b mut Vec<u8>,
) -> &'b [u8] {
    let raw_len = SEAL_OVERHEAD + 1 + plaintext.len();
    if buf.len() < raw_len {
        buf.resize(raw_len, 0);
    }
    let payload = NONCE_LEN + 1..NONCE_LEN + 1 + plaintext.len();
    let len = match compress::compress_into(plaintext, level, &mut buf[payload]) {
        Some(n) => {
            buf[NONCE_LEN] = compress::ZSTD;
            let len = SEAL_OVERHEAD + 1 + n;
            key.seal_in_place(&[], &mut buf[..len]);
            len
        }
        None => {
            key.seal_parts(&[], &[compress::RAW], plaintext, &mut buf[..raw_len]);
            raw_len
        }
    };
    &buf[..len]
}

/// Opens a sealed blob and checks it is the blob named `id`. Its buffers
/// are its own, not [`open_blob_with`]'s reused ones: a large blob read
/// once (a tree of many entries) is then neither copied out of them nor
/// left in them after its plaintext is dropped.
pub fn open_blob(
    key: &MasterKey,
    id: &BlobId,
    sealed: &[u8],
    raw_length: u32,
    what: &str,
) -> Result<Vec<u8>> {
    if raw_length > MAX_BLOB {
        return Err(Error::corrupt(what, "blob too large"));
    }
    let mut encoded = Vec::new();
    key.open_into(sealed, &[], what, &mut encoded)?;
    let plain = if encoded.first() == Some(&crate::compress::RAW) {
        encoded.remove(0);
        if encoded.len() != raw_length as usize {
            return Err(Error::corrupt(
                what,
                format!(
                    "decodes to {} bytes, index says {raw_length}",
                    encoded.len()
                ),
            ));
        }
        encoded
    } else {
        crate::compress::decode(&encoded, raw_length as usize, what)?
    };
    if key.blob_id(&plain) != *id {
        return Err(Error::corrupt(what, "content does not match its id"));
    }
    Ok(plain)
}

thread_local! {
    /// Decryption and decompression buffers reused across blobs.
    static OPEN_BUFS: std::cell::Cell<(Vec<u8>, Vec<u8>)> = const { std::cell::Cell::new((Vec::new(), Vec::new())) };
}

/// Opens a sealed blob, checks it is the blob named `id`, and hands its
/// plaintext to `f` from a buffer this thread reuses, so reading many
/// blobs (restore, verify) allocates nothing per blob.
pub fn open_blob_with<R>(
    key: &MasterKey,
    id: &BlobId,
    sealed: &[u8],
    raw_length: u32,
    what: &str,
    f: impl FnOnce(&[u8]) -> R,
) -> Result<R> {
    if raw_length > MAX_BLOB {
        return Err(Error::corrupt(what, "blob too large"));
    }
    // Taken out of the cell for the duration, so a nested call (none today)
    // would get fresh buffers instead of a borrow conflict.
    let (mut encoded, mut plain) = OPEN_BUFS.take();
    let result = key
        .open_into(sealed, &[], what, &mut encoded)
        .and_then(|()| crate::compress::decode_ref(&encoded, raw_length as usize, what, &mut plain))
        .and_then(|plain| {
            if key.blob_id(plain) != *id {
                Err(Error::corrupt(what, "content does not match its id"))
            } else {
                Ok(f(plain))
            }
        });
    OPEN_BUFS.set((encoded, plain));
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_and_read_back() {
        let key = MasterKey::generate();
        let mut w = PackWriter::new(BlobKind::Data);
        let mut o = Vec::new();
        let blobs: Vec<Vec<u8>> = vec![vec![1; 1000], b"abc".to_vec(), vec![]];
        for b in &blobs {
            let sealed = seal_blob(&key, b, 3, &mut o);
            w.add_sealed(key.blob_id(b), sealed, b.len() as u32)
                .unwrap();
        }
        let p = w.finish(&key).unwrap();
        assert_eq!(p.id, PackId(file_hash(&p.bytes)));
        let h = decode_header(&p.bytes, &key, "pack").unwrap();
        assert_eq!(h, p.header);
        for (e, b) in h.entries.iter().zip(&blobs) {
            let sealed = &p.bytes[e.offset as usize..(e.offset + e.length) as usize];
            assert_eq!(
                &open_blob(&key, &e.id, sealed, e.raw_length, "b").unwrap(),
                b
            );
            assert!(open_blob(&key, &BlobId([0; 32]), sealed, e.raw_length, "b").is_err());
        }
    }

    /// In a pack over 4 GiB an entry's offset plus its length could pass
    /// what a `u32` holds, and a reader adding them would overflow: such
    /// an entry is out of bounds, however far its header starts.
    #[test]
    fn an_entry_ending_past_4_gib_is_out_of_bounds() {
        let key = MasterKey::generate();
        let sealed = |offset: u32, length: u32| {
            let header = PackHeader {
                version: VERSION,
                kind: BlobKind::Data,
                entries: vec![PackEntry {
                    id: BlobId([1; 32]),
                    offset,
                    length,
                    raw_length: 10,
                }],
            };
            let mut tail = vec![0; NONCE_LEN];
            codec::encode_into(&header, &mut tail);
            tail.resize(tail.len() + TAG_LEN, 0);
            key.seal_in_place(&codec::header(MAGIC, VERSION), &mut tail);
            tail
        };
        let start = 5 << 30;
        let near = u32::MAX - 100;
        assert!(decode_sealed_header(&sealed(near, 100), start, &key, "p").is_ok());
        let err = decode_sealed_header(&sealed(near, 200), start, &key, "p").unwrap_err();
        assert!(err.to_string().contains("out of bounds"), "{err}");
    }

    #[test]
    fn a_reused_sealing_buffer_returns_only_this_blobs_bytes() {
        let key = MasterKey::generate();
        let mut noise = vec![0u8; 300_000];
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for b in &mut noise {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        let text = b"a line of text that repeats\n".repeat(4000);
        let mut buf = Vec::new();
        // Large raw, then smaller compressed, raw, tiny and empty blobs,
        // each sealed over what the one before left in the buffer.
        for (plain, compressed) in [
            (&noise[..], false),
            (&text[..], true),
            (&noise[..1000], false),
            (&b"abc"[..], false),
            (&[][..], false),
            (&text[..5000], true),
        ] {
            let id = key.blob_id(plain);
            let sealed = seal_blob(&key, plain, 3, &mut buf).to_vec();
            if compressed {
                assert!(sealed.len() < plain.len() / 2, "{} bytes", sealed.len());
            } else {
                assert_eq!(sealed.len(), SEAL_OVERHEAD + 1 + plain.len());
            }
            let len = plain.len() as u32;
            assert_eq!(open_blob(&key, &id, &sealed, len, "b").unwrap(), plain);
        }
        // Compression off: stored raw however compressible.
        let sealed = seal_blob(&key, &text, 0, &mut buf);
        assert_eq!(sealed.len(), SEAL_OVERHEAD + 1 + text.len());
        let id = key.blob_id(&text);
        assert_eq!(
            open_blob(&key, &id, sealed, text.len() as u32, "b").unwrap(),
            text
        );
    }

    #[test]
    fn truncated_or_flipped_packs_are_errors() {
        let key = MasterKey::generate();
        let mut w = PackWriter::new(BlobKind::Tree);
        w.add_sealed(BlobId([1; 32]), &[0u8; 50], 10).unwrap();
        let p = w.finish(&key).unwrap();
        for cut in [0, 5, 12, 30, p.bytes.len() - 1] {
            assert!(
                decode_header(&p.bytes[..cut], &key, "pack").is_err(),
                "cut {cut}"
            );
        }
        let mut bad = p.bytes.clone();
        let n = bad.len();
        bad[n - 20] ^= 1;
        assert!(decode_header(&bad, &key, "pack").is_err());
    }
}
