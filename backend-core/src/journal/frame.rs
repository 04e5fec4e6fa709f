//! A record's frame in the journal: its payload's length and CRC-32, then the payload (the
//! record as JSON, written by a writer of its own whose bytes are serde_json's).

use super::MAX_RECORD_LEN;
use crate::{Error, ProcessRecord, Result, Status, Value};

/// Appends the journal frame of `record` to `out`: its payload's length and CRC-32, then the
/// payload. Frames are made wherever the record is (an MPI worker frames its own, so the
/// master writes them without decoding and encoding each record again). Returns the status
/// the frame records: a record too large for the journal (its output, most likely) is
/// framed as a crash that says so, so that neither the run nor the journal after it is lost.
pub fn encode_frame(record: &ProcessRecord, out: &mut Vec<u8>) -> Result<Status> {
    let start = out.len();
    let len = write_frame(record, out, start)?;
    if len <= MAX_RECORD_LEN as usize {
        return Ok(record.status);
    }
    out.truncate(start);
    let stand_in = ProcessRecord {
        status: Status::Crashed,
        output: Value::Null,
        reason: Some(format!(
            "its record is {} MiB, more than the journal takes ({} MiB): write large outputs to files in \
             the result directory (`ProcessContext::result_dir`) and return their names",
            len / (1024 * 1024),
            MAX_RECORD_LEN / (1024 * 1024)
        )),
        stderr_tail: None,
        id: record.id,
        run: record.run,
        params: record.params.clone(),
        attempts: record.attempts,
        started_at: record.started_at,
        duration_s: record.duration_s,
        location: record.location.clone(),
    };
    if write_frame(&stand_in, out, start)? > MAX_RECORD_LEN as usize {
        out.truncate(start);
        return Err(Error::Internal(format!(
            "the record of process {} is larger than {} MiB even without its output",
            record.id,
            MAX_RECORD_LEN / (1024 * 1024)
        )));
    }
    Ok(stand_in.status)
}

/// Writes the frame of `record` at `start` (the end of `out`); returns its payload's length.
fn write_frame(record: &ProcessRecord, out: &mut Vec<u8>, start: usize) -> Result<usize> {
    out.extend_from_slice(&[0; 8]);
    write_record_json(record, out).map_err(|e| Error::Internal(format!("a record could not be encoded: {e}")))?;
    let payload = &out[start + 8..];
    let len = payload.len();
    let crc = crc32fast::hash(payload);
    out[start..start + 4].copy_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(len)
}

/// Writes `record` as JSON, the very bytes `serde_json::to_writer` writes (a test checks
/// it), but with the record's own keys written as they are rather than escaped one by one:
/// every process's record passes here, and the keys were a third of the time.
pub(super) fn write_record_json(record: &ProcessRecord, out: &mut Vec<u8>) -> serde_json::Result<()> {
    fn field<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, key: &[u8], value: &T) -> serde_json::Result<()> {
        out.extend_from_slice(key);
        serde_json::to_writer(&mut *out, value)
    }
    field(out, b"{\"id\":", &record.id)?;
    field(out, b",\"run\":", &record.run)?;
    field(out, b",\"params\":", &record.params)?;
    field(out, b",\"status\":", &record.status)?;
    field(out, b",\"output\":", &record.output)?;
    if let Some(reason) = &record.reason {
        field(out, b",\"reason\":", reason)?;
    }
    if let Some(tail) = &record.stderr_tail {
        field(out, b",\"stderr_tail\":", tail)?;
    }
    field(out, b",\"attempts\":", &record.attempts)?;
    field(out, b",\"started_at\":", &record.started_at)?;
    field(out, b",\"duration_s\":", &record.duration_s)?;
    field(out, b",\"location\":{\"host\":", &record.location.host)?;
    field(out, b",\"worker\":", &record.location.worker)?;
    out.extend_from_slice(b"}}");
    Ok(())
}

/// A frame's header: its payload's length and the payload's CRC-32.
pub(super) fn frame_head(head: &[u8; 8]) -> (u32, u32) {
    (u32::from_le_bytes([head[0], head[1], head[2], head[3]]), u32::from_le_bytes([head[4], head[5], head[6], head[7]]))
}

/// Decodes one frame made by [`encode_frame`], checking its length and checksum.
pub fn decode_frame(frame: &[u8]) -> Result<ProcessRecord> {
    let corrupt = |why: &str| Error::Internal(format!("a journal frame of {} bytes {why}", frame.len()));
    let (head, payload) = frame.split_first_chunk::<8>().ok_or_else(|| corrupt("is shorter than its header"))?;
    let (len, crc) = frame_head(head);
    if payload.len() != len as usize {
        return Err(corrupt("does not have the length it claims"));
    }
    if crc32fast::hash(payload) != crc {
        return Err(corrupt("does not match its checksum"));
    }
    serde_json::from_slice(payload).map_err(|e| corrupt(&format!("does not decode: {e}")))
}
