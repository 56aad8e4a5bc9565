//! Extracting the ELF `vmlinux` from a bzImage (`vmlinuz`), as the kernel's
//! `scripts/extract-vmlinux` does: find the compressed payload by its magic, decompress it,
//! keep the result if it is an ELF. Firecracker boots only the ELF.
//!
//! Debian's cloud kernel is LZ4-compressed in the legacy frame format (magic `02 21 4c 18`:
//! blocks of up to 8 MiB, each a little-endian length and an LZ4 block), which LZ4 frame
//! decoders refuse, so the framing is read here and each block goes to `lz4_flex`.

/// The legacy LZ4 frame magic, as it appears in the file.
const LZ4_LEGACY_MAGIC: [u8; 4] = [0x02, 0x21, 0x4c, 0x18];
/// Largest uncompressed block of the legacy format.
const LZ4_LEGACY_BLOCK: usize = 8 << 20;
const ELF_MAGIC: [u8; 4] = [0x7f, b'E', b'L', b'F'];

/// Why no vmlinux came out.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExtractError {
    #[error("no supported compressed payload (lz4 legacy) found in the kernel image")]
    NoPayload,
}

/// The ELF kernel inside `bzimage`, trying every occurrence of the magic (the bytes can occur
/// by chance before the real payload).
pub fn extract_vmlinux(bzimage: &[u8]) -> Result<Vec<u8>, ExtractError> {
    let mut from = 0;
    while let Some(pos) = find(&bzimage[from..], &LZ4_LEGACY_MAGIC) {
        let start = from + pos;
        if let Some(elf) = lz4_legacy(&bzimage[start + 4..])
            && elf.starts_with(&ELF_MAGIC)
        {
            return Ok(elf);
        }
        from = start + 1;
    }
    Err(ExtractError::NoPayload)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Decode legacy LZ4 blocks until the data ends, a block fails, or the magic repeats.
/// Trailing bytes after the payload (the bzImage's own trailer) end the stream, which is why
/// a failed block after at least one good one still yields the output.
fn lz4_legacy(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    while data.len() >= 4 {
        let len = u32::from_le_bytes([data[0], data[1], data[2], data[3]]) as usize;
        if [data[0], data[1], data[2], data[3]] == LZ4_LEGACY_MAGIC {
            data = &data[4..];
            continue;
        }
        let Some(block) = data.get(4..4 + len) else {
            break;
        };
        match lz4_flex::block::decompress(block, LZ4_LEGACY_BLOCK) {
            Ok(b) => out.extend_from_slice(&b),
            Err(_) => break,
        }
        data = &data[4 + len..];
    }
    if out.is_empty() { None } else { Some(out) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn legacy_frame(payload: &[u8]) -> Vec<u8> {
        let mut v = LZ4_LEGACY_MAGIC.to_vec();
        for chunk in payload.chunks(LZ4_LEGACY_BLOCK) {
            let c = lz4_flex::block::compress(chunk);
            v.extend_from_slice(&(c.len() as u32).to_le_bytes());
            v.extend_from_slice(&c);
        }
        v
    }

    #[test]
    fn finds_elf_after_decoy_magic() {
        let mut elf = ELF_MAGIC.to_vec();
        elf.extend(std::iter::repeat_n(7u8, 10_000));
        let mut image = b"MZ setup code".to_vec();
        image.extend_from_slice(&LZ4_LEGACY_MAGIC); // a decoy with garbage after it
        image.extend_from_slice(&[0xff, 0xff, 0xff, 0x7f, 1, 2]);
        image.extend(legacy_frame(&elf));
        image.extend_from_slice(b"trailer");
        assert_eq!(extract_vmlinux(&image).expect("extract"), elf);
    }

    #[test]
    fn no_payload_is_an_error() {
        assert_eq!(
            extract_vmlinux(b"not a kernel"),
            Err(ExtractError::NoPayload)
        );
        // compressed but not an ELF
        assert_eq!(
            extract_vmlinux(&legacy_frame(b"plain data, no elf header here")),
            Err(ExtractError::NoPayload)
        );
    }
}
