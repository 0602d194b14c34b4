//! An HTTP/2 client's frames after its preface, walked for the one value h2 answers with the
//! wrong error code in any SETTINGS frame: a SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1, a
//! connection error of type FLOW_CONTROL_ERROR (RFC 9113 §6.5.2) that h2 (0.4.21, the newest
//! release) answers with GOAWAY(PROTOCOL_ERROR). `h2_preface` judges the preface's SETTINGS and
//! hands the rest of the connection to this walk.
//!
//! The walk reads frame headers only: 9 bytes, a type compare, and the payload skipped by its
//! length. SETTINGS payloads (a few entries, rare after the preface) are read entry by entry.
//!
//! On the bad value, h2 is made to give the right answer itself, on its own frame boundaries:
//! from the value's first byte on (its top bit says it is too large), the client's bytes are
//! withheld and h2 reads instead the rest of that SETTINGS frame made valid (the window 65,535,
//! then entries of an unknown id, which h2 ignores as RFC 9113 §6.5.2 says), then two
//! WINDOW_UPDATEs on stream 0 of 2^31-1 each, which overflow the connection's window whatever it
//! is: h2 answers GOAWAY(FLOW_CONTROL_ERROR) and closes the connection.

const SETTINGS: u8 = 0x4;
const ACK: u8 = 0x1;
const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
/// A WINDOW_UPDATE on stream 0 (RFC 9113 §6.9) of 2^31-1, twice.
const OVERFLOW: [u8; 26] = [
    0, 0, 4, 0x8, 0, 0, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff, //
    0, 0, 4, 0x8, 0, 0, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff,
];
/// The valid value that stands for the bad one: the default window.
const STAND_IN: [u8; 4] = [0, 0, 0xff, 0xff];
/// An identifier no SETTINGS parameter has: h2 ignores the entry.
const UNKNOWN_ID: u8 = 0xf0;

/// Where the walk stands in the client's frames.
#[derive(Debug)]
pub enum FrameWalk {
    /// A frame header, `have` of its bytes seen.
    Header { bytes: [u8; 9], have: usize },
    /// A payload passed by: `left` bytes of it to come.
    Payload { left: u32 },
    /// A SETTINGS payload: `left` bytes of it to come; `id` of the current entry, `at` bytes
    /// into it.
    Settings { left: u32, id: u16, at: usize },
}

/// What the bytes read tell the walk.
#[derive(Debug, PartialEq, Eq)]
pub enum Walked {
    More,
    /// The bad window's first byte is at this offset of the bytes: from there on, h2 gets
    /// `StandIn` bytes instead.
    BadWindow { at: usize, stand_in: StandIn },
}

/// The bytes h2 reads in place of the client's once the bad window is seen: the rest of the
/// SETTINGS frame made valid, then `OVERFLOW`.
#[derive(Debug, PartialEq, Eq)]
pub struct StandIn {
    /// The SETTINGS payload bytes left, the bad value's four included.
    payload: u32,
    /// The bytes given so far.
    given: u32,
}

// === impl FrameWalk ===

impl FrameWalk {
    pub fn new() -> FrameWalk {
        FrameWalk::Header { bytes: [0; 9], have: 0 }
    }

    /// Takes in the bytes just read.
    pub fn see(&mut self, bytes: &[u8]) -> Walked {
        let mut i = 0;
        while i < bytes.len() {
            match self {
                FrameWalk::Payload { left } => {
                    let n = (bytes.len() - i).min(usize::try_from(*left).unwrap_or(usize::MAX));
                    i += n;
                    *left -= n as u32;
                    if *left == 0 {
                        *self = FrameWalk::new();
                    }
                }
                FrameWalk::Header { bytes: header, have } => {
                    let n = (bytes.len() - i).min(header.len() - *have);
                    header[*have..*have + n].copy_from_slice(&bytes[i..i + n]);
                    *have += n;
                    i += n;
                    if *have == header.len() {
                        *self = FrameWalk::after_header(header);
                    }
                }
                FrameWalk::Settings { left, id, at } => {
                    let byte = bytes[i];
                    if *at < 2 {
                        *id = (*id << 8) | u16::from(byte);
                    } else if *at == 2 && *id == SETTINGS_INITIAL_WINDOW_SIZE && byte & 0x80 != 0 {
                        return Walked::BadWindow { at: i, stand_in: StandIn { payload: *left, given: 0 } };
                    }
                    *at = (*at + 1) % 6;
                    if *at == 0 {
                        *id = 0;
                    }
                    *left -= 1;
                    i += 1;
                    if *left == 0 {
                        *self = FrameWalk::new();
                    }
                }
            }
        }
        Walked::More
    }

    fn after_header(header: &[u8; 9]) -> FrameWalk {
        let length = u32::from_be_bytes([0, header[0], header[1], header[2]]);
        match length {
            0 => FrameWalk::new(),
            // A SETTINGS frame h2 would apply (one of another length is h2's FRAME_SIZE_ERROR).
            _ if header[3] == SETTINGS && header[4] & ACK == 0 && length.is_multiple_of(6) => {
                FrameWalk::Settings { left: length, id: 0, at: 0 }
            }
            _ => FrameWalk::Payload { left: length },
        }
    }
}

// === impl StandIn ===

impl StandIn {
    /// Writes the next of its bytes into `out`; how many (0 once all are given).
    pub fn give(&mut self, out: &mut [u8]) -> usize {
        let total = self.payload + OVERFLOW.len() as u32;
        let mut n = 0;
        while n < out.len() && self.given < total {
            let k = self.given;
            out[n] = if k < 4 {
                STAND_IN[k as usize]
            } else if k < self.payload {
                // Entries after the bad one's: an unknown id, value 0.
                if (k - 4) % 6 < 2 { UNKNOWN_ID } else { 0 }
            } else {
                OVERFLOW[(k - self.payload) as usize]
            };
            self.given += 1;
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let length = (payload.len() as u32).to_be_bytes();
        [&length[1..], &[kind, flags, 0, 0, 0, 1], payload].concat()
    }

    fn settings(entries: &[(u16, u32)]) -> Vec<u8> {
        let payload: Vec<u8> = entries.iter().flat_map(|(id, value)| [&id.to_be_bytes()[..], &value.to_be_bytes()].concat()).collect();
        frame(SETTINGS, 0, &payload)
    }

    #[test]
    fn a_later_settings_frame_with_a_bad_window_is_found_however_the_bytes_are_split() {
        let data = frame(0x0, 0, &[0x4; 100]);
        let headers = frame(0x1, 0x4, &[0x82; 20]);
        let bad_at_in_settings = 9 + 6 + 2;
        let before = [&data[..], &headers, &settings(&[])].concat();
        let stream = [&before[..], &settings(&[(3, 100), (4, 1 << 31), (5, 16_384)]), &headers].concat();
        let bad_at = before.len() + bad_at_in_settings;
        for split in 1..stream.len() {
            let mut walk = FrameWalk::new();
            let (a, b) = stream.split_at(split);
            let found = match walk.see(a) {
                Walked::More => match walk.see(b) {
                    Walked::BadWindow { at, stand_in } => (at + split, stand_in),
                    Walked::More => panic!("not found at split {split}"),
                },
                Walked::BadWindow { at, stand_in } => (at, stand_in),
            };
            // The bad value's four bytes and the entry after it are left of the payload.
            assert_eq!(found, (bad_at, StandIn { payload: 10, given: 0 }), "{split}");
        }
    }

    #[test]
    fn good_windows_acks_and_other_frames_pass() {
        let mut walk = FrameWalk::new();
        let stream = [
            settings(&[(4, (1 << 31) - 1)]),
            frame(SETTINGS, ACK, &[]),
            frame(0x0, 0, &[0x80, 0, 0x4, 0x80, 0, 0, 0, 0]),
            frame(0x8, 0, &[0xff; 4]),
        ]
        .concat();
        assert_eq!(walk.see(&stream), Walked::More);
        assert!(matches!(walk, FrameWalk::Header { have: 0, .. }));
    }

    #[test]
    fn the_stand_in_completes_the_settings_frame_then_overflows_the_window() {
        let mut stand_in = StandIn { payload: 10, given: 0 };
        let mut out = [0u8; 64];
        let mut given = Vec::new();
        // In small pieces, as a small read buffer would take them.
        loop {
            let n = stand_in.give(&mut out[..3]);
            if n == 0 {
                break;
            }
            given.extend_from_slice(&out[..n]);
        }
        let expected = [&STAND_IN[..], &[UNKNOWN_ID, UNKNOWN_ID, 0, 0, 0, 0], &OVERFLOW].concat();
        assert_eq!(given, expected);
    }
}
