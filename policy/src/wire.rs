//! Low-level wire helpers: LEB128 varints, a bounds-checked reader, delta-encoded range runs
//! and zlib with a size limit.

use std::io::{Read, Write};

use flate2::Compression;
use flate2::read::ZlibDecoder;
use flate2::write::ZlibEncoder;

use crate::ipset::Addr;

/// Appends `v` as an unsigned LEB128 varint.
pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u128) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A cursor over bytes; every read is bounds-checked and returns `None` past the end.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    pub fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.buf.len() {
            return None;
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Some(head)
    }

    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    pub fn u8(&mut self) -> Option<u8> {
        self.bytes(1).map(|b| b[0])
    }

    pub fn u32_le(&mut self) -> Option<u32> {
        self.bytes(4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
    }

    pub fn varint(&mut self) -> Option<u128> {
        let mut v: u128 = 0;
        for shift in (0..128).step_by(7) {
            let b = self.u8()?;
            v |= u128::from(b & 0x7f).checked_shl(shift)?;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// Encodes one run of sorted disjoint ranges: count, then per range the gap from the previous
/// range's end (the first start is absolute), the length minus one, and the class.
pub(crate) fn put_ranges<A: Addr>(out: &mut Vec<u8>, ranges: &[(A, A, u16)]) {
    put_varint(out, ranges.len() as u128);
    let mut next: u128 = 0;
    for &(s, e, c) in ranges {
        let (s, e) = (s.to_u128(), e.to_u128());
        put_varint(out, s - next);
        put_varint(out, e - s);
        put_varint(out, u128::from(c));
        next = e.wrapping_add(1);
    }
}

/// Decodes a run written by [`put_ranges`], appending to `out`.
pub(crate) fn get_ranges<A: Addr>(r: &mut Reader<'_>, out: &mut Vec<(A, A, u16)>) -> Option<()> {
    let n = usize::try_from(r.varint()?).ok()?;
    // Each range takes at least 3 bytes: refuse counts the input cannot hold.
    if n > r.buf.len() / 3 {
        return None;
    }
    out.reserve(n);
    let mut next: u128 = 0;
    for i in 0..n {
        if i > 0 && next == 0 {
            return None; // the previous range ended at the top of the space
        }
        let s = next.checked_add(r.varint()?)?;
        let e = s.checked_add(r.varint()?)?;
        let c = u16::try_from(r.varint()?).ok()?;
        out.push((A::from_u128(s)?, A::from_u128(e)?, c));
        next = e.wrapping_add(1);
    }
    Some(())
}

/// zlib-compresses `data` at `level` (0–9).
pub(crate) fn deflate(data: &[u8], level: u32) -> std::io::Result<Vec<u8>> {
    let mut enc = ZlibEncoder::new(Vec::with_capacity(data.len() / 2), Compression::new(level));
    enc.write_all(data)?;
    enc.finish()
}

/// Inflates zlib `data`, refusing output beyond `limit` bytes.
pub(crate) fn inflate(data: &[u8], limit: usize) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    ZlibDecoder::new(data)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)?;
    if out.len() > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("inflates beyond {limit} bytes"),
        ));
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip() {
        let mut out = Vec::new();
        for v in [0u128, 1, 127, 128, 300, u32::MAX.into(), u128::MAX] {
            put_varint(&mut out, v);
        }
        let mut r = Reader::new(&out);
        for v in [0u128, 1, 127, 128, 300, u32::MAX.into(), u128::MAX] {
            assert_eq!(r.varint(), Some(v));
        }
        assert!(r.is_empty());
        assert_eq!(Reader::new(&[0x80]).varint(), None);
    }

    #[test]
    fn ranges_round_trip_to_the_edges() {
        let ranges: Vec<(u32, u32, u16)> = vec![(0, 0, 1), (1, 10, 2), (20, u32::MAX, 0)];
        let mut out = Vec::new();
        put_ranges(&mut out, &ranges);
        let mut back = Vec::new();
        get_ranges::<u32>(&mut Reader::new(&out), &mut back).unwrap();
        assert_eq!(back, ranges);
        let v6: Vec<(u128, u128, u16)> = vec![(5, u128::MAX, 3)];
        let mut out = Vec::new();
        put_ranges(&mut out, &v6);
        let mut back = Vec::new();
        get_ranges::<u128>(&mut Reader::new(&out), &mut back).unwrap();
        assert_eq!(back, v6);
        // A v6 value does not fit a v4 run.
        assert!(get_ranges::<u32>(&mut Reader::new(&out), &mut Vec::new()).is_none());
    }

    #[test]
    fn inflate_enforces_its_limit() {
        let packed = deflate(&[0u8; 10_000], 6).unwrap();
        assert_eq!(inflate(&packed, 10_000).unwrap().len(), 10_000);
        assert!(inflate(&packed, 9_999).is_err());
        assert!(inflate(b"not zlib", 100).is_err());
    }
}
