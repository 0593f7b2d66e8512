//! The queue between the fork task and the call's pacer: what the service sent, in order,
//! with audio cut into 20 ms pieces and bounded by playing time (oldest audio dropped).
//!
//! Pure: no clock, no locks. The fork shares it with the call's media task behind a mutex
//! owned by that one fork.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use crate::config::AudioFormat;
use crate::protocol::ServiceCommand;

/// Most non-audio commands kept waiting; past it new ones are refused (a flood of marks).
pub const MAX_COMMANDS: usize = 4096;

/// What [`PlaybackQueue::push_audio`] had to drop to stay within bounds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pushed {
    /// 20 ms pieces made from the pushed audio.
    pub frames_queued: u64,
    /// Pieces dropped (oldest first) to respect the bound.
    pub frames_dropped: u64,
}

/// The playback queue.
#[derive(Debug)]
pub struct PlaybackQueue {
    items: VecDeque<ServiceCommand>,
    /// A piece shorter than 20 ms, still filling with the next audio of the same format.
    tail: Option<(AudioFormat, BytesMut)>,
    queued_us: u64,
    max_us: u64,
    commands: usize,
}

impl PlaybackQueue {
    /// A queue holding at most `max_us` microseconds of audio.
    pub fn new(max_us: u64) -> Self {
        PlaybackQueue {
            items: VecDeque::new(),
            tail: None,
            queued_us: 0,
            max_us,
            commands: 0,
        }
    }

    /// Microseconds of audio waiting (including a partial piece).
    pub fn queued_us(&self) -> u64 {
        self.queued_us
    }

    /// Nothing to hand out (a partial piece still filling does not count).
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Appends audio from the service, cut into 20 ms pieces. Contiguous audio of the same
    /// format is joined across messages so that the pacer gets whole frames.
    pub fn push_audio(&mut self, format: AudioFormat, mut data: Bytes) -> Pushed {
        let mut pushed = Pushed::default();
        let frame = format.frame_bytes().max(1);
        self.queued_us += format.duration_us(data.len());
        if let Some((tail_format, mut tail)) = self.tail.take() {
            if tail_format == format {
                let take = (frame - tail.len()).min(data.len());
                tail.extend_from_slice(&data.split_to(take));
                if tail.len() == frame {
                    self.items.push_back(audio(format, tail.freeze()));
                    pushed.frames_queued += 1;
                } else {
                    self.tail = Some((format, tail));
                }
            } else {
                self.items.push_back(audio(tail_format, tail.freeze()));
                pushed.frames_queued += 1;
            }
        }
        while data.len() >= frame {
            self.items.push_back(audio(format, data.split_to(frame)));
            pushed.frames_queued += 1;
        }
        if !data.is_empty() {
            self.tail = Some((format, BytesMut::from(&data[..])));
        }
        while self.queued_us > self.max_us {
            if !self.drop_oldest_audio() {
                break;
            }
            pushed.frames_dropped += 1;
        }
        pushed
    }

    /// Appends a non-audio command after all audio so far (sealing a partial piece).
    /// Returns false, keeping nothing, when [`MAX_COMMANDS`] are already waiting.
    pub fn push_command(&mut self, cmd: ServiceCommand) -> bool {
        if self.commands >= MAX_COMMANDS {
            return false;
        }
        self.seal();
        self.items.push_back(cmd);
        self.commands += 1;
        true
    }

    /// Puts a command ahead of everything (a failure report).
    pub fn push_front(&mut self, cmd: ServiceCommand) {
        self.items.push_front(cmd);
        self.commands += 1;
    }

    /// Barge-in: drops all audio and pending marks, keeps other commands in order, and puts
    /// a [`ServiceCommand::Clear`] first. Returns the names of the marks dropped, oldest
    /// first, and the number of 20 ms pieces dropped.
    pub fn clear(&mut self) -> (Vec<String>, u64) {
        let mut marks = Vec::new();
        let mut frames = u64::from(self.tail.take().is_some());
        let mut kept = VecDeque::with_capacity(self.items.len().min(16));
        for item in self.items.drain(..) {
            match item {
                ServiceCommand::Audio { .. } => frames += 1,
                ServiceCommand::Mark(name) => marks.push(name),
                other => kept.push_back(other),
            }
        }
        self.items = kept;
        self.commands = self.items.len();
        self.queued_us = 0;
        self.push_front(ServiceCommand::Clear);
        (marks, frames)
    }

    /// The next command for the pacer.
    pub fn pop(&mut self) -> Option<ServiceCommand> {
        let item = self.items.pop_front()?;
        match &item {
            ServiceCommand::Audio { format, data } => {
                self.queued_us = self
                    .queued_us
                    .saturating_sub(format.duration_us(data.len()));
            }
            _ => self.commands = self.commands.saturating_sub(1),
        }
        Some(item)
    }

    fn seal(&mut self) {
        if let Some((format, tail)) = self.tail.take() {
            self.items.push_back(audio(format, tail.freeze()));
        }
    }

    fn drop_oldest_audio(&mut self) -> bool {
        let at = self
            .items
            .iter()
            .position(|c| matches!(c, ServiceCommand::Audio { .. }));
        let removed = match at {
            Some(i) => self.items.remove(i),
            None => self.tail.take().map(|(f, t)| audio(f, t.freeze())),
        };
        match removed {
            Some(ServiceCommand::Audio { format, data }) => {
                self.queued_us = self
                    .queued_us
                    .saturating_sub(format.duration_us(data.len()));
                true
            }
            _ => false,
        }
    }
}

fn audio(format: AudioFormat, data: Bytes) -> ServiceCommand {
    ServiceCommand::Audio { format, data }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::config::Encoding;

    const MU: AudioFormat = AudioFormat {
        encoding: Encoding::Pcmu,
        sample_rate: 8000,
        channels: 1,
    };
    const L16: AudioFormat = AudioFormat {
        encoding: Encoding::L16,
        sample_rate: 16000,
        channels: 1,
    };

    fn bytes(n: usize, v: u8) -> Bytes {
        Bytes::from(vec![v; n])
    }

    fn audio_len(c: Option<ServiceCommand>) -> usize {
        match c {
            Some(ServiceCommand::Audio { data, .. }) => data.len(),
            other => panic!("expected audio, got {other:?}"),
        }
    }

    #[test]
    fn cuts_into_frames_and_joins_partials() {
        let mut q = PlaybackQueue::new(10_000_000);
        assert_eq!(q.push_audio(MU, bytes(400, 1)).frames_queued, 2);
        assert_eq!(q.queued_us(), 50_000);
        assert_eq!(audio_len(q.pop()), 160);
        assert_eq!(audio_len(q.pop()), 160);
        assert!(q.pop().is_none(), "the 80-byte tail waits for more");
        q.push_audio(MU, bytes(100, 2));
        match q.pop() {
            Some(ServiceCommand::Audio { data, .. }) => {
                assert_eq!(data.len(), 160);
                assert_eq!(&data[..80], &[1; 80][..]);
                assert_eq!(&data[80..], &[2; 80][..]);
            }
            other => panic!("{other:?}"),
        }
        // 20 bytes remain in the tail; a mark seals it.
        assert!(q.push_command(ServiceCommand::Mark("m".into())));
        assert_eq!(audio_len(q.pop()), 20);
        assert_eq!(q.pop(), Some(ServiceCommand::Mark("m".into())));
        assert_eq!(q.queued_us(), 0);
    }

    #[test]
    fn format_change_seals_the_tail() {
        let mut q = PlaybackQueue::new(10_000_000);
        q.push_audio(MU, bytes(100, 1));
        q.push_audio(L16, bytes(640, 2));
        assert_eq!(audio_len(q.pop()), 100);
        assert_eq!(audio_len(q.pop()), 640);
    }

    #[test]
    fn drops_oldest_audio_past_the_bound_keeping_marks() {
        // 100 ms bound = 5 frames of µ-law.
        let mut q = PlaybackQueue::new(100_000);
        q.push_audio(MU, bytes(160 * 3, 1));
        q.push_command(ServiceCommand::Mark("a".into()));
        let p = q.push_audio(MU, bytes(160 * 4, 2));
        assert_eq!(p.frames_dropped, 2);
        assert_eq!(p.frames_queued, 4);
        assert_eq!(q.queued_us(), 100_000);
        // Oldest (value 1) audio went first; one of it is left, then the mark.
        match q.pop() {
            Some(ServiceCommand::Audio { data, .. }) => assert_eq!(data[0], 1),
            other => panic!("{other:?}"),
        }
        assert_eq!(q.pop(), Some(ServiceCommand::Mark("a".into())));
        for _ in 0..4 {
            match q.pop() {
                Some(ServiceCommand::Audio { data, .. }) => assert_eq!(data[0], 2),
                other => panic!("{other:?}"),
            }
        }
        assert!(q.pop().is_none());
    }

    #[test]
    fn clear_drops_audio_and_marks_keeps_other_commands() {
        let mut q = PlaybackQueue::new(10_000_000);
        q.push_command(ServiceCommand::Dtmf("1".into()));
        q.push_audio(MU, bytes(330, 1));
        q.push_command(ServiceCommand::Mark("a".into()));
        q.push_audio(MU, bytes(170, 1));
        q.push_command(ServiceCommand::Mark("b".into()));
        q.push_command(ServiceCommand::Hangup);
        let (marks, frames) = q.clear();
        assert_eq!(marks, vec!["a".to_string(), "b".to_string()]);
        assert_eq!(frames, 5);
        assert_eq!(q.pop(), Some(ServiceCommand::Clear));
        assert_eq!(q.pop(), Some(ServiceCommand::Dtmf("1".into())));
        assert_eq!(q.pop(), Some(ServiceCommand::Hangup));
        assert!(q.pop().is_none());
        assert_eq!(q.queued_us(), 0);
    }

    #[test]
    fn command_flood_is_bounded() {
        let mut q = PlaybackQueue::new(1);
        for i in 0..MAX_COMMANDS {
            assert!(q.push_command(ServiceCommand::Mark(i.to_string())));
        }
        assert!(!q.push_command(ServiceCommand::Mark("x".into())));
        q.pop();
        assert!(q.push_command(ServiceCommand::Mark("x".into())));
    }
}
