//! gzip decoding through ISA-L's igzip (Debian's libisal), the fastest inflate on x86: layer
//! decompression was half of a pull's CPU time with zlib-rs. Every gzip member of the stream
//! is decoded (as `gzip -d` does) and each member's CRC and length are checked by ISA-L.
//! The inflate state lives on the C side (`csrc/isal_inflate.c`), compiled against the
//! installed header, so its layout is never guessed here.

use std::ffi::{c_int, c_void};
use std::io::{self, BufRead, Read};
use std::ptr::NonNull;

extern "C" {
    fn berth_isal_gzip_new() -> *mut c_void;
    fn berth_isal_gzip_reset(state: *mut c_void);
    fn berth_isal_free(state: *mut c_void);
    fn berth_isal_inflate(
        state: *mut c_void,
        input: *const u8,
        in_len: u32,
        out: *mut u8,
        out_len: u32,
        consumed: *mut u32,
        produced: *mut u32,
        finished: *mut c_int,
    ) -> c_int;
}

/// A reader of the bytes a gzip stream (one member or several) decodes to.
pub struct GzipDecoder<R: BufRead> {
    inner: R,
    state: NonNull<c_void>,
    /// The member just ended: a new one may follow, or the stream ends.
    member_done: bool,
}

// SAFETY: the state is heap memory owned by this value alone and only used through
// `&mut self`; ISA-L keeps no thread-local or global state for inflate.
unsafe impl<R: BufRead + Send> Send for GzipDecoder<R> {}

impl<R: BufRead> GzipDecoder<R> {
    pub fn new(inner: R) -> io::Result<Self> {
        // SAFETY: allocates and initialises a state; NULL only when out of memory.
        let state = NonNull::new(unsafe { berth_isal_gzip_new() })
            .ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?;
        Ok(GzipDecoder {
            inner,
            state,
            member_done: false,
        })
    }
}

impl<R: BufRead> Drop for GzipDecoder<R> {
    fn drop(&mut self) {
        // SAFETY: the state came from berth_isal_gzip_new and is freed once, here.
        unsafe { berth_isal_free(self.state.as_ptr()) }
    }
}

fn damaged(code: c_int) -> io::Error {
    let what = match code {
        -4 => "its gzip header is invalid",
        -5 => "it uses a compression method gzip does not define",
        -6 => "its checksum does not match its contents",
        _ => "its deflate data is invalid",
    };
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("the gzip stream is damaged: {what}"),
    )
}

impl<R: BufRead> Read for GzipDecoder<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        let out_len = out.len().min(u32::MAX as usize);
        let mut idle = 0;
        loop {
            if self.member_done {
                if self.inner.fill_buf()?.is_empty() {
                    return Ok(0);
                }
                // SAFETY: the state is valid (owned by self).
                unsafe { berth_isal_gzip_reset(self.state.as_ptr()) };
                self.member_done = false;
            }
            let input = self.inner.fill_buf()?;
            let at_end = input.is_empty();
            let in_len = input.len().min(u32::MAX as usize);
            let (mut consumed, mut produced, mut finished) = (0u32, 0u32, 0 as c_int);
            // SAFETY: `input` and `out` are live buffers of at least the lengths given, the
            // state is valid, and the three results point at locals.
            let ret = unsafe {
                berth_isal_inflate(
                    self.state.as_ptr(),
                    input.as_ptr(),
                    in_len as u32,
                    out.as_mut_ptr(),
                    out_len as u32,
                    &mut consumed,
                    &mut produced,
                    &mut finished,
                )
            };
            self.inner.consume(consumed as usize);
            if ret < 0 {
                return Err(damaged(ret));
            }
            self.member_done = finished != 0;
            if produced > 0 {
                return Ok(produced as usize);
            }
            if self.member_done {
                continue;
            }
            if at_end {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the gzip stream ends before its end",
                ));
            }
            // Headers only consume; a call that does neither twice would spin for ever.
            idle = if consumed == 0 { idle + 1 } else { 0 };
            if idle > 1 {
                return Err(damaged(-1));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8], level: u32) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
        gz.write_all(data).unwrap();
        gz.finish().unwrap()
    }

    fn decode(data: &[u8], buf: usize) -> io::Result<Vec<u8>> {
        let mut d = GzipDecoder::new(io::BufReader::with_capacity(buf, data))?;
        let mut out = vec![];
        d.read_to_end(&mut out)?;
        Ok(out)
    }

    /// Text-like and random data, every level, tiny and large buffers: what zlib wrote,
    /// ISA-L reads back exactly.
    #[test]
    fn decodes_what_zlib_encodes() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let random: Vec<u8> = (0..300_000)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        let text: Vec<u8> = b"layer after layer of files, "
            .iter()
            .cycle()
            .take(1 << 20)
            .copied()
            .collect();
        for data in [&random[..], &text[..], &b""[..]] {
            for level in [0, 1, 6, 9] {
                let gz = gzip(data, level);
                for buf in [1, 7, 4096, 1 << 20] {
                    assert_eq!(
                        decode(&gz, buf).unwrap(),
                        data,
                        "level {level} buffer {buf}"
                    );
                }
            }
        }
    }

    #[test]
    fn every_member_is_decoded() {
        let mut gz = gzip(b"first ", 6);
        gz.extend(gzip(b"second", 1));
        assert_eq!(decode(&gz, 3).unwrap(), b"first second");
    }

    #[test]
    fn damage_and_truncation_are_errors() {
        let data = vec![7u8; 100_000];
        let gz = gzip(&data, 6);
        let cut = decode(&gz[..gz.len() - 10], 4096).unwrap_err();
        assert_eq!(cut.kind(), io::ErrorKind::UnexpectedEof, "{cut}");
        let mut bad_crc = gz.clone();
        let n = bad_crc.len();
        bad_crc[n - 6] ^= 0xff;
        let e = decode(&bad_crc, 4096).unwrap_err();
        assert!(e.to_string().contains("checksum"), "{e}");
        let mut bad_header = gz;
        bad_header[2] = 99;
        let e = decode(&bad_header, 4096).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
    }
}
