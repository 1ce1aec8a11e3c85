//! Stream framing for SIP over TCP (RFC 3261 §18.3): messages are delimited
//! by the blank line after the headers and the Content-Length that follows.
//! Sans-IO: bytes in, whole messages out.

/// Why a stream had to be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// A message (or its headers alone) exceeds the configured limit.
    #[error("message larger than {0} bytes on a stream")]
    TooLarge(usize),
    /// No usable Content-Length: on a stream the message end cannot be found.
    #[error("missing or malformed Content-Length on a stream")]
    NoLength,
}

/// Cuts a TCP byte stream into SIP messages.
#[derive(Debug)]
pub struct StreamFramer {
    buffer: Vec<u8>,
    limit: usize,
}

impl StreamFramer {
    /// A framer that refuses messages larger than `limit` bytes.
    pub fn new(limit: usize) -> Self {
        StreamFramer {
            buffer: Vec::new(),
            limit,
        }
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete message, `Ok(None)` if more bytes are needed, or an
    /// error after which the stream should be closed.
    pub fn next_message(&mut self) -> Result<Option<Vec<u8>>, FramingError> {
        // CRLF keep-alives (RFC 5626 §3.5.1) between messages are skipped.
        let skip = self
            .buffer
            .iter()
            .take_while(|b| **b == b'\r' || **b == b'\n')
            .count();
        self.buffer.drain(..skip);
        let Some(end) = self.buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
            if self.buffer.len() > self.limit {
                return Err(FramingError::TooLarge(self.limit));
            }
            return Ok(None);
        };
        let head = &self.buffer[..end];
        let length = content_length(head).ok_or(FramingError::NoLength)?;
        let total = end + 4 + length;
        if total > self.limit {
            return Err(FramingError::TooLarge(self.limit));
        }
        if self.buffer.len() < total {
            return Ok(None);
        }
        let rest = self.buffer.split_off(total);
        Ok(Some(std::mem::replace(&mut self.buffer, rest)))
    }
}

fn content_length(head: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(head).ok()?;
    let mut found = None;
    for line in text.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.eq_ignore_ascii_case("Content-Length") || name.eq_ignore_ascii_case("l") {
            if found.is_some() {
                return None;
            }
            found = Some(value.trim().parse().ok()?);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_and_joined_messages() {
        let one = b"OPTIONS sip:a SIP/2.0\r\nContent-Length: 3\r\n\r\nabc";
        let two = b"SIP/2.0 200 OK\r\nl: 0\r\n\r\n";
        let mut stream = Vec::new();
        stream.extend_from_slice(b"\r\n\r\n");
        stream.extend_from_slice(one);
        stream.extend_from_slice(two);
        let mut f = StreamFramer::new(1000);
        let mut out = Vec::new();
        for chunk in stream.chunks(7) {
            f.push(chunk);
            while let Some(m) = f.next_message().expect("valid") {
                out.push(m);
            }
        }
        assert_eq!(out, vec![one.to_vec(), two.to_vec()]);
    }

    #[test]
    fn refuses_what_cannot_be_framed() {
        let mut f = StreamFramer::new(1000);
        f.push(b"OPTIONS sip:a SIP/2.0\r\nVia: x\r\n\r\n");
        assert_eq!(f.next_message(), Err(FramingError::NoLength));
        let mut f = StreamFramer::new(100);
        f.push(b"OPTIONS sip:a SIP/2.0\r\nContent-Length: 500\r\n\r\n");
        assert_eq!(f.next_message(), Err(FramingError::TooLarge(100)));
        let mut f = StreamFramer::new(100);
        f.push(&[b'a'; 200]);
        assert_eq!(f.next_message(), Err(FramingError::TooLarge(100)));
    }
}
