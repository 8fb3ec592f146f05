//! MP4/M4A/MOV files whose index (`moov`) follows their samples (`mdat`), as ffmpeg and many
//! phone recorders write them, cannot be demuxed from a pipe, which cannot seek back: this
//! moves the index to the front, adjusting its chunk offsets, as `qt-faststart` does, so
//! ffmpeg can read the upload from stdin (and never needs a seekable file).

/// One ISO BMFF box: its four-character type and where its body and end are.
pub(crate) struct Mp4Box {
    pub(crate) kind: [u8; 4],
    pub(crate) start: usize,
    pub(crate) body: usize,
    pub(crate) end: usize,
}

/// The box at `at`, if it is whole (a size of 0 runs to the end of `bytes`).
pub(crate) fn mp4_box(bytes: &[u8], at: usize) -> Option<Mp4Box> {
    let head = bytes.get(at..at.checked_add(8)?)?;
    let size32 = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    let kind = [head[4], head[5], head[6], head[7]];
    let (size, header) = match size32 {
        0 => ((bytes.len() - at) as u64, 8),
        1 => {
            let large = bytes.get(at + 8..at + 16)?;
            (u64::from_be_bytes(large.try_into().ok()?), 16)
        }
        n => (u64::from(n), 8),
    };
    let size = usize::try_from(size).ok()?;
    if size < header {
        return None;
    }
    let end = at.checked_add(size)?;
    (end <= bytes.len()).then_some(Mp4Box {
        kind,
        start: at,
        body: at + header,
        end,
    })
}

/// An MP4 with its top-level `moov` after its first `mdat`, rewritten with `moov` first and
/// every chunk offset (`stco`, `co64`) that pointed past the moved bytes adjusted; `None` when
/// there is nothing to do or it cannot be done safely (no whole `moov`, a compressed one, an
/// offset that would overflow), in which case ffmpeg gets the input unchanged.
pub(crate) fn faststart(input: &[u8]) -> Option<Vec<u8>> {
    // No `ftyp` needed: old QuickTime files start with `wide` or `mdat`. Other input stops at
    // its first "box" whose size runs past the end, having found no `mdat` then `moov`.
    let mut mdat = None;
    let mut at = 0;
    while let Some(b) = mp4_box(input, at) {
        match &b.kind {
            b"mdat" if mdat.is_none() => mdat = Some(b.start),
            b"moov" => {
                let mdat = mdat?; // moov before any mdat: already streamable
                let mut moov = input[b.start..b.end].to_vec();
                let shift = moov.len() as u64;
                let moved = mdat as u64..b.start as u64;
                let body = b.body - b.start;
                shift_offsets(&mut moov[body..], &moved, shift)?;
                let mut out = Vec::with_capacity(input.len());
                out.extend_from_slice(&input[..mdat]);
                out.extend_from_slice(&moov);
                out.extend_from_slice(&input[mdat..b.start]);
                out.extend_from_slice(&input[b.end..]);
                return Some(out);
            }
            _ => {}
        }
        at = b.end;
    }
    None
}

/// Adds `shift` to each chunk offset inside `moved` in the boxes of `container`, recursing
/// into the boxes on the way to the sample tables.
fn shift_offsets(container: &mut [u8], moved: &std::ops::Range<u64>, shift: u64) -> Option<()> {
    let mut at = 0;
    while at + 8 <= container.len() {
        let b = mp4_box(container, at)?;
        let body = &mut container[b.body..b.end];
        match &b.kind {
            b"trak" | b"mdia" | b"minf" | b"stbl" => shift_offsets(body, moved, shift)?,
            b"stco" | b"co64" => {
                let width = if &b.kind == b"stco" { 4 } else { 8 };
                let count = u32::from_be_bytes(body.get(4..8)?.try_into().ok()?) as usize;
                let entries = body.get_mut(8..8 + count.checked_mul(width)?)?;
                for entry in entries.chunks_exact_mut(width) {
                    let offset = if width == 4 {
                        u64::from(u32::from_be_bytes(entry.try_into().ok()?))
                    } else {
                        u64::from_be_bytes(entry.try_into().ok()?)
                    };
                    if moved.contains(&offset) {
                        let shifted = offset.checked_add(shift)?;
                        if width == 4 {
                            entry.copy_from_slice(&u32::try_from(shifted).ok()?.to_be_bytes());
                        } else {
                            entry.copy_from_slice(&shifted.to_be_bytes());
                        }
                    }
                }
            }
            b"cmov" => return None,
            _ => {}
        }
        at = b.end;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faststart_moves_moov_and_shifts_the_chunk_offsets_into_mdat() {
        fn mp4_box(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
            let mut b = ((body.len() + 8) as u32).to_be_bytes().to_vec();
            b.extend_from_slice(kind);
            b.extend_from_slice(body);
            b
        }
        let ftyp = mp4_box(b"ftyp", b"M4A \0\0\0\0");
        let mdat = mp4_box(b"mdat", b"....PAYLOAD-ONE....PAYLOAD-TWO");
        let one = (ftyp.len() + 8 + 4) as u32;
        let two = (ftyp.len() + 8 + 19) as u32;
        let mut stco = vec![0, 0, 0, 0];
        stco.extend_from_slice(&2u32.to_be_bytes());
        stco.extend_from_slice(&one.to_be_bytes());
        stco.extend_from_slice(&two.to_be_bytes());
        let mut co64 = vec![0, 0, 0, 0];
        co64.extend_from_slice(&1u32.to_be_bytes());
        co64.extend_from_slice(&u64::from(two).to_be_bytes());
        let stbl = [mp4_box(b"stsd", b"xx"), mp4_box(b"stco", &stco)].concat();
        let trak = |table: Vec<u8>| {
            mp4_box(
                b"trak",
                &mp4_box(b"mdia", &mp4_box(b"minf", &mp4_box(b"stbl", &table))),
            )
        };
        let moov = mp4_box(
            b"moov",
            &[
                mp4_box(b"mvhd", b"header"),
                trak(stbl),
                trak(mp4_box(b"co64", &co64)),
            ]
            .concat(),
        );
        let file = [ftyp.clone(), mdat.clone(), moov.clone()].concat();

        let fast = faststart(&file).unwrap();
        assert_eq!(fast.len(), file.len());
        assert_eq!(&fast[..ftyp.len()], &ftyp[..]);
        assert_eq!(&fast[ftyp.len() + moov.len()..], &mdat[..]);
        let find = |needle: &[u8]| {
            fast.windows(needle.len())
                .position(|w| w == needle)
                .unwrap()
        };
        let shifted = |o: u32| (o as usize + moov.len()) as u32;
        let new_stco = find(b"stco") + 12;
        assert_eq!(&fast[new_stco..new_stco + 4], &shifted(one).to_be_bytes());
        assert_eq!(
            &fast[new_stco + 4..new_stco + 8],
            &shifted(two).to_be_bytes()
        );
        let at = shifted(one) as usize;
        assert_eq!(&fast[at..at + 11], b"PAYLOAD-ONE");
        let new_co64 = find(b"co64") + 12;
        let at = u64::from_be_bytes(fast[new_co64..new_co64 + 8].try_into().unwrap()) as usize;
        assert_eq!(&fast[at..at + 11], b"PAYLOAD-TWO");

        // Nothing to do, or nothing safe to do: the input goes to ffmpeg as it is.
        assert!(faststart(&[ftyp.clone(), moov.clone(), mdat.clone()].concat()).is_none());
        assert!(faststart(&[ftyp.clone(), mdat.clone()].concat()).is_none());
        assert!(faststart(&file[..file.len() - 1]).is_none(), "moov cut off");
        let cmov = mp4_box(b"moov", &mp4_box(b"cmov", b"zlib..."));
        assert!(faststart(&[ftyp.clone(), mdat.clone(), cmov].concat()).is_none());
        assert!(faststart(b"junk").is_none());
        assert!(faststart(b"hello, this is text and not an mp4 file").is_none());
        // Old QuickTime: no ftyp.
        let wide = mp4_box(b"wide", b"");
        let quicktime = [wide.clone(), mdat.clone(), moov.clone()].concat();
        let moved = faststart(&quicktime).unwrap();
        assert_eq!(&moved[..8], &wide[..]);
        assert_eq!(&moved[8..8 + 4], &(moov.len() as u32).to_be_bytes());
        assert!(faststart(b"\0\0\0\x08ftyp\xff\xff\xff\xffmdat").is_none());
    }
}
