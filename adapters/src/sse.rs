//! A small, bounded Server-Sent Events decoder (the part of the WHATWG spec that MCP uses:
//! `data:`, `event:`, `id:` and `retry:` fields, events ended by a blank line).

/// One decoded event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    pub event: Option<String>,
    pub data: String,
    pub id: Option<String>,
}

/// Feed it bytes as they arrive; it yields complete events.
///
/// An event larger than `max_event` bytes is an error rather than unbounded buffering.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    current: Event,
    has_data: bool,
    max_event: usize,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SseError {
    #[error("server-sent event larger than {0} bytes")]
    TooLarge(usize),
}

impl Decoder {
    pub fn new(max_event: usize) -> Self {
        Self { buf: Vec::new(), current: Event::default(), has_data: false, max_event }
    }

    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<Event>, SseError> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(pos) = self.buf.get(start..).and_then(|b| b.iter().position(|&c| c == b'\n')) {
            let end = start + pos;
            let mut line = self.buf.get(start..end).unwrap_or_default();
            if line.last() == Some(&b'\r') {
                line = line.get(..line.len() - 1).unwrap_or_default();
            }
            let line = String::from_utf8_lossy(line).into_owned();
            start = end + 1;
            if line.is_empty() {
                if self.has_data || self.current.event.is_some() {
                    out.push(std::mem::take(&mut self.current));
                }
                self.has_data = false;
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f.to_owned(), v.strip_prefix(' ').unwrap_or(v).to_owned()),
                None => (line.clone(), String::new()),
            };
            match field.as_str() {
                "" => {} // comment line (keep-alive)
                "data" => {
                    if self.has_data {
                        self.current.data.push('\n');
                    }
                    self.current.data.push_str(&value);
                    self.has_data = true;
                }
                "event" => self.current.event = Some(value),
                "id" => self.current.id = Some(value),
                _ => {}
            }
            if self.current.data.len() > self.max_event {
                return Err(SseError::TooLarge(self.max_event));
            }
        }
        self.buf.drain(..start);
        if self.buf.len() > self.max_event {
            return Err(SseError::TooLarge(self.max_event));
        }
        Ok(out)
    }
}

/// Encodes one SSE event carrying a JSON-RPC message.
pub fn encode(data: &str, id: Option<&str>) -> String {
    let mut s = String::with_capacity(data.len() + 32);
    s.push_str("event: message\n");
    if let Some(id) = id {
        s.push_str("id: ");
        s.push_str(id);
        s.push('\n');
    }
    for line in data.split('\n') {
        s.push_str("data: ");
        s.push_str(line);
        s.push('\n');
    }
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_split_events() {
        let mut d = Decoder::new(1024);
        assert!(d.feed(b"event: message\nda").unwrap().is_empty());
        let ev = d.feed(b"ta: {\"a\":1}\r\n\r\n: keepalive\n\ndata: x\ndata: y\n\n").unwrap();
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0].data, "{\"a\":1}");
        assert_eq!(ev[0].event.as_deref(), Some("message"));
        assert_eq!(ev[1].data, "x\ny");
    }

    #[test]
    fn bounds_event_size() {
        let mut d = Decoder::new(16);
        assert_eq!(d.feed(&[b'a'; 64]), Err(SseError::TooLarge(16)));
    }

    #[test]
    fn encode_roundtrips() {
        let mut d = Decoder::new(1024);
        let ev = d.feed(encode("{\"x\":\"a\\nb\"}", Some("7")).as_bytes()).unwrap();
        assert_eq!(ev[0].data, "{\"x\":\"a\\nb\"}");
        assert_eq!(ev[0].id.as_deref(), Some("7"));
    }
}
