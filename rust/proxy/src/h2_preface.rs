//! The client's HTTP/2 connection preface, watched on its way to hyper for the one error the h2
//! crate reports with the wrong code: RFC 9113 §6.5.2 makes a SETTINGS_INITIAL_WINDOW_SIZE
//! above 2^31-1 a connection error of type FLOW_CONTROL_ERROR, and h2 (0.4.21, the newest
//! release) answers it with GOAWAY(PROTOCOL_ERROR), as it does any invalid setting.
//!
//! Only the preface's SETTINGS frame is read (RFC 9113 §3.4: the client's first frame): the
//! 24-byte magic, a 9-byte frame header, and its entries, parsed as they pass without being
//! buffered. The client's later frames are walked by `h2_frames` (their headers only), which
//! corrects the same value in any later SETTINGS frame. An HTTP/1.1 connection ends the watch at
//! its first byte, and then every read and write is passed on after one branch.
//!
//! On the bad value in the preface, the bytes from that frame's start on are withheld from
//! hyper, the proxy writes GOAWAY(FLOW_CONTROL_ERROR) itself (h2 has written no frame but its
//! SETTINGS yet, so the GOAWAY cannot land inside one of h2's), and hyper reads the end of the connection. h2
//! writes its own SETTINGS before it reads the client's preface; should it not have yet, an
//! empty SETTINGS frame goes first, for the server's preface to come first (RFC 9113 §3.4).

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::h2_frames::{FrameWalk, StandIn, Walked};

const MAGIC: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const SETTINGS: u8 = 0x4;
const ACK: u8 = 0x1;
const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
/// RFC 9113 §6.9.1: the largest flow-control window.
const MAX_WINDOW: u32 = (1 << 31) - 1;
/// The largest frame a client may send before the server's SETTINGS (the default
/// SETTINGS_MAX_FRAME_SIZE): a longer one is h2's FRAME_SIZE_ERROR, not this watch's business.
const MAX_FRAME: u32 = 16_384;

/// An empty SETTINGS frame (RFC 9113 §6.5), then GOAWAY (§6.8): last stream 0, error code
/// FLOW_CONTROL_ERROR (0x3, §7). Written once, by hand: h2 exposes no frame encoder.
const SETTINGS_THEN_GOAWAY: [u8; 26] = [
    0, 0, 0, SETTINGS, 0, 0, 0, 0, 0, //
    0, 0, 8, 0x7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x3,
];
/// Where the GOAWAY starts in `SETTINGS_THEN_GOAWAY`.
const GOAWAY_ONLY: usize = 9;

/// A connection's IO, with the watch over its preface until that has passed.
#[derive(Debug)]
pub struct PrefaceWatch<I> {
    io: I,
    /// Until the first frame has passed (a few dozen bytes, kept inline: no allocation).
    watch: Option<Watch>,
}

#[derive(Debug)]
struct Watch {
    state: State,
    /// Whether hyper has written anything (the server's SETTINGS, for HTTP/2).
    server_wrote: bool,
    /// Once refusing: the bytes of `SETTINGS_THEN_GOAWAY` written so far.
    refusing: Option<usize>,
}

#[derive(Debug)]
enum State {
    /// The magic's bytes matched so far.
    Magic(usize),
    Header { bytes: [u8; 9], have: usize },
    Settings { length: u32, left: u32, entry: [u8; 6], have: usize },
    /// The preface passed: the client's frames are walked.
    Frames(FrameWalk),
    /// A later SETTINGS frame had the bad window: h2 reads these bytes in place of the
    /// client's (`h2_frames`), then the end of the connection.
    StandIn(StandIn),
}

/// What the bytes read tell the watch.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    More,
    /// The preface passed (or it is not HTTP/2, or not one this watch judges): stop watching.
    Done,
    /// The bad setting, in a frame that starts at this offset of the bytes (0: before them).
    BadWindow { frame_at: usize },
    /// The bad setting in a later SETTINGS frame, its value from this offset of the bytes on.
    BadLaterWindow { at: usize },
}

// === impl PrefaceWatch ===

impl<I> PrefaceWatch<I> {
    /// Watches the preface of a connection: an HTTP/1.1 one ends the watch at its first byte.
    pub fn new(io: I) -> PrefaceWatch<I> {
        PrefaceWatch { io, watch: Some(Watch { state: State::Magic(0), server_wrote: false, refusing: None }) }
    }
}

impl<I: AsyncWrite + Unpin> PrefaceWatch<I> {
    /// Writes what is left of the GOAWAY, flushes, and then reads as the end of the connection.
    fn refuse(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(watch) = self.watch.as_mut() else { return Poll::Ready(Ok(())) };
        let written = watch.refusing.get_or_insert(if watch.server_wrote { GOAWAY_ONLY } else { 0 });
        while *written < SETTINGS_THEN_GOAWAY.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &SETTINGS_THEN_GOAWAY[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        ready!(Pin::new(&mut self.io).poll_flush(cx))?;
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> AsyncRead for PrefaceWatch<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(watch) = this.watch.as_mut() else { return Pin::new(&mut this.io).poll_read(cx, buf) };
        if watch.refusing.is_some() {
            return this.refuse(cx);
        }
        if let State::StandIn(stand_in) = &mut watch.state {
            let given = stand_in.give(buf.initialize_unfilled());
            buf.advance(given);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        match watch.see(&buf.filled()[before..]) {
            Seen::More => {}
            Seen::Done => this.watch = None,
            Seen::BadLaterWindow { at } => {
                buf.set_filled(before + at);
                if let State::StandIn(stand_in) = &mut watch.state {
                    let given = stand_in.give(buf.initialize_unfilled());
                    buf.advance(given);
                }
            }
            Seen::BadWindow { frame_at } => {
                buf.set_filled(before + frame_at);
                watch.refusing = Some(if watch.server_wrote { GOAWAY_ONLY } else { 0 });
                if frame_at == 0 {
                    return this.refuse(cx);
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for PrefaceWatch<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(watch) = this.watch.as_mut() {
            // Once the GOAWAY is on its way, nothing of hyper's follows it.
            if watch.refusing.is_some() {
                return Poll::Ready(Ok(buf.len()));
            }
            watch.server_wrote |= !buf.is_empty();
        }
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(watch) = this.watch.as_mut() {
            if watch.refusing.is_some() {
                return Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()));
            }
            watch.server_wrote |= bufs.iter().any(|b| !b.is_empty());
        }
        Pin::new(&mut this.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

// === impl Watch ===

impl Watch {
    /// Takes in the bytes just read.
    fn see(&mut self, bytes: &[u8]) -> Seen {
        for (at, &byte) in bytes.iter().enumerate() {
            match &mut self.state {
                State::Frames(_) | State::StandIn(_) => return self.walk(bytes, at),
                State::Magic(matched) => {
                    if MAGIC[*matched] != byte {
                        return Seen::Done;
                    }
                    *matched += 1;
                    if *matched == MAGIC.len() {
                        self.state = State::Header { bytes: [0; 9], have: 0 };
                    }
                }
                State::Header { bytes: header, have } => {
                    header[*have] = byte;
                    *have += 1;
                    if *have < header.len() {
                        continue;
                    }
                    let length = u32::from_be_bytes([0, header[0], header[1], header[2]]);
                    // Not a SETTINGS frame h2 would apply: h2 judges it.
                    if header[3] != SETTINGS || header[4] & ACK != 0 || !length.is_multiple_of(6) || length > MAX_FRAME {
                        return Seen::Done;
                    }
                    if length == 0 {
                        self.state = State::Frames(FrameWalk::new());
                        return self.walk(bytes, at + 1);
                    }
                    self.state = State::Settings { length, left: length, entry: [0; 6], have: 0 };
                }
                State::Settings { length, left, entry, have } => {
                    entry[*have] = byte;
                    *have += 1;
                    *left -= 1;
                    if *have == entry.len() {
                        *have = 0;
                        let id = u16::from_be_bytes([entry[0], entry[1]]);
                        let value = u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]);
                        if id == SETTINGS_INITIAL_WINDOW_SIZE && value > MAX_WINDOW {
                            // The frame's bytes seen so far, this one included: its header and
                            // its payload up to here.
                            let into_frame = 9 + (*length - *left) as usize;
                            return Seen::BadWindow { frame_at: (at + 1).saturating_sub(into_frame) };
                        }
                    }
                    if *left == 0 {
                        self.state = State::Frames(FrameWalk::new());
                        return self.walk(bytes, at + 1);
                    }
                }
            }
        }
        Seen::More
    }

    /// The client's frames after the preface, from offset `from` of the bytes on.
    fn walk(&mut self, bytes: &[u8], from: usize) -> Seen {
        let State::Frames(walk) = &mut self.state else { return Seen::More };
        match walk.see(&bytes[from..]) {
            Walked::More => Seen::More,
            Walked::BadWindow { at, stand_in } => {
                self.state = State::StandIn(stand_in);
                Seen::BadLaterWindow { at: from + at }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(entries: &[(u16, u32)]) -> Vec<u8> {
        let mut frame = vec![0, 0, (entries.len() * 6) as u8, SETTINGS, 0, 0, 0, 0, 0];
        for (id, value) in entries {
            frame.extend_from_slice(&id.to_be_bytes());
            frame.extend_from_slice(&value.to_be_bytes());
        }
        frame
    }

    fn watch() -> Watch {
        Watch { state: State::Magic(0), server_wrote: false, refusing: None }
    }

    #[test]
    fn the_preface_settings_are_judged_however_they_are_split() {
        let good = [&MAGIC[..], &settings(&[(3, 100), (4, MAX_WINDOW)])].concat();
        let bad = [&MAGIC[..], &settings(&[(3, 100), (4, MAX_WINDOW + 1)])].concat();
        for split in 1..good.len() {
            let mut w = watch();
            let first = w.see(&good[..split]);
            assert!(first == Seen::More || split == good.len(), "{split}");
            // Past the preface, the frames are walked.
            assert_eq!(w.see(&good[split..]), Seen::More, "{split}");
            assert!(matches!(w.state, State::Frames(_)), "{split}");
            let mut w = watch();
            let (a, b) = bad.split_at(split);
            let seen = match w.see(a) {
                Seen::More => w.see(b),
                seen => seen,
            };
            // The frame starts at byte 24 of the connection.
            let expected = 24usize.saturating_sub(split);
            assert_eq!(seen, Seen::BadWindow { frame_at: if split > 24 { 0 } else { expected } }, "{split}");
        }
    }

    #[test]
    fn a_later_settings_frame_with_the_bad_window_is_found_after_the_preface() {
        let later = settings(&[(4, MAX_WINDOW + 1)]);
        for preface in [settings(&[(3, 100)]), settings(&[])] {
            let stream = [&MAGIC[..], &preface, &later].concat();
            // The bad value starts after the later frame's header and its entry's id.
            let at = MAGIC.len() + preface.len() + 9 + 2;
            assert_eq!(watch().see(&stream), Seen::BadLaterWindow { at });
            let mut w = watch();
            assert_eq!(w.see(&stream[..at - 3]), Seen::More);
            assert_eq!(w.see(&stream[at - 3..]), Seen::BadLaterWindow { at: 3 });
        }
    }

    #[test]
    fn what_is_not_a_preface_settings_frame_ends_the_watch() {
        assert_eq!(watch().see(b"GET / HTTP/1.1\r\n"), Seen::Done);
        let ping = [&MAGIC[..], &[0, 0, 8, 6, 0, 0, 0, 0, 0]].concat();
        assert_eq!(watch().see(&ping), Seen::Done);
        let ack = [&MAGIC[..], &[0, 0, 0, SETTINGS, ACK, 0, 0, 0, 0]].concat();
        assert_eq!(watch().see(&ack), Seen::Done);
    }
}
