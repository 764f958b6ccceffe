//! Delimited-text traces with configurable columns.

use std::io::Read;
use std::path::Path;

use super::{parse_id, Request, TraceError};

/// Where to find the fields of a CSV trace. Columns are 0-based.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvOptions {
    /// Column of the object id (integer, or any string, which is hashed).
    pub id_column: usize,
    /// Column of the request time in seconds (integer or decimal, converted to
    /// microseconds). `None`: the time is the 0-based index of the data row.
    pub time_column: Option<usize>,
    /// Column of the object size in bytes. `None`: every object has size 1.
    /// Rows of size 0 are skipped, as for oracleGeneral.
    pub size_column: Option<usize>,
    /// Field delimiter, e.g. `b','` or `b'\t'`.
    pub delimiter: u8,
    /// Whether the first non-blank row is a header. `None` = detect: it is a
    /// header if its id field is not an integer and, when a time or size
    /// column is configured, one of those is not a number either.
    pub has_header: Option<bool>,
}

impl Default for CsvOptions {
    fn default() -> Self {
        Self {
            id_column: 0,
            time_column: None,
            size_column: None,
            delimiter: b',',
            has_header: None,
        }
    }
}

/// Parses CSV rows into requests (`next_access` not filled) and the number of
/// zero-size rows skipped.
///
/// Header detection (when `has_header` is `None`): the first non-blank row is a
/// header if its id field is not an integer and, when a time or size column is
/// configured, one of those is not a number either. The second condition keeps
/// the first request of traces with string ids, as long as they have a numeric
/// time or size column; otherwise set `has_header` explicitly.
///
/// Fields follow RFC 4180 (the `csv` crate): double-quoted fields may hold the
/// delimiter, line breaks and `""` for a quote. Blank lines are skipped, and
/// surrounding whitespace is trimmed from every field.
pub(super) fn parse(
    reader: &mut dyn Read,
    path: &Path,
    options: &CsvOptions,
) -> Result<(Vec<Request>, u64), TraceError> {
    let error = |line: u64, reason: String| TraceError::Csv {
        path: path.to_path_buf(),
        line,
        reason,
    };
    let mut blanks = BlanksAroundQuotes::new(reader, options.delimiter);
    let mut rows = ::csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(options.delimiter)
        .trim(::csv::Trim::All)
        .buffer_capacity(1 << 16)
        .from_reader(&mut blanks);
    let mut requests = Vec::new();
    let mut skipped_zero_size = 0u64;
    let mut header_decided = options.has_header.is_some();
    let mut skip_first_row = options.has_header == Some(true);
    let mut data_rows = 0u64;
    let mut last_line = 0u64;
    let mut fields = ::csv::ByteRecord::new();
    loop {
        match rows.read_byte_record(&mut fields) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                let line = e.position().map_or(last_line + 1, |p| p.line());
                return Err(match e.into_kind() {
                    ::csv::ErrorKind::Io(error) => TraceError::Io {
                        path: path.to_path_buf(),
                        op: "read",
                        error,
                    },
                    other => error(line, format!("{other:?}")),
                });
            }
        }
        let line_number = fields.position().map_or(last_line + 1, |p| p.line());
        last_line = line_number;
        // A line of blanks is one empty field once trimmed.
        if fields.iter().all(<[u8]>::is_empty) {
            continue;
        }
        if !header_decided {
            header_decided = true;
            skip_first_row = looks_like_header(&fields, options);
        }
        if skip_first_row {
            skip_first_row = false;
            continue;
        }

        let field = |column: usize, what: &str| {
            fields.get(column).ok_or_else(|| {
                error(
                    line_number,
                    format!(
                        "missing {what} column {column} (0-based): the row has {} field(s)",
                        fields.len()
                    ),
                )
            })
        };
        let id_field = field(options.id_column, "id")?;
        if id_field.is_empty() {
            return Err(error(
                line_number,
                format!("empty id in column {}", options.id_column),
            ));
        }
        let id = parse_id(id_field);
        let time = match options.time_column {
            Some(column) => parse_seconds_as_micros(field(column, "time")?)
                .map_err(|r| error(line_number, format!("time column {column}: {r}")))?,
            None => data_rows,
        };
        let size = match options.size_column {
            Some(column) => parse_size(field(column, "size")?)
                .map_err(|r| error(line_number, format!("size column {column}: {r}")))?,
            None => 1,
        };
        data_rows += 1;
        if size == 0 {
            skipped_zero_size += 1;
        } else {
            requests.push(Request::new(time, id, size));
        }
    }
    drop(rows);
    if blanks.state == Lexeme::Quoted {
        return Err(error(
            last_line.max(1),
            "unterminated quoted field: the input ends inside double quotes".into(),
        ));
    }
    Ok((requests, skipped_zero_size))
}

/// Where [`BlanksAroundQuotes`] is within a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lexeme {
    FieldStart,
    Unquoted,
    Quoted,
    /// A quote inside a quoted field: the closing one, or the first of `""`.
    QuoteInQuoted,
    AfterClosingQuote,
}

/// Drops blanks between a delimiter and an opening quote and between a closing
/// quote and the next delimiter (`a, "b" ,c`), which hand-written traces often
/// have. The csv crate follows RFC 4180 strictly there and would read such a
/// field literally, quotes included; it has no option like Python's
/// `skipinitialspace`. Every other blank is kept and trimmed by the reader.
/// Also tells whether the input ended inside a quoted field, which the csv
/// crate accepts silently.
struct BlanksAroundQuotes<'a> {
    inner: &'a mut dyn Read,
    delimiter: u8,
    state: Lexeme,
}

impl<'a> BlanksAroundQuotes<'a> {
    fn new(inner: &'a mut dyn Read, delimiter: u8) -> Self {
        Self {
            inner,
            delimiter,
            state: Lexeme::FieldStart,
        }
    }

    /// Whether to keep `byte`, advancing the state.
    fn keep(&mut self, byte: u8) -> bool {
        let blank = byte == b' ' || byte == b'\t';
        let ends_field = byte == self.delimiter || byte == b'\n' || byte == b'\r';
        let (keep, next) = match self.state {
            Lexeme::FieldStart if blank => (false, Lexeme::FieldStart),
            Lexeme::FieldStart if byte == b'"' => (true, Lexeme::Quoted),
            Lexeme::Quoted if byte == b'"' => (true, Lexeme::QuoteInQuoted),
            Lexeme::Quoted => (true, Lexeme::Quoted),
            Lexeme::QuoteInQuoted if byte == b'"' => (true, Lexeme::Quoted),
            Lexeme::QuoteInQuoted | Lexeme::AfterClosingQuote if blank => {
                (false, Lexeme::AfterClosingQuote)
            }
            _ if ends_field => (true, Lexeme::FieldStart),
            _ => (true, Lexeme::Unquoted),
        };
        self.state = next;
        keep
    }
}

impl Read for BlanksAroundQuotes<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let n = self.inner.read(buf)?;
            if n == 0 {
                return Ok(0);
            }
            let mut kept = 0;
            for i in 0..n {
                let byte = buf[i];
                if self.keep(byte) {
                    buf[kept] = byte;
                    kept += 1;
                }
            }
            // Zero would read as the end of the input.
            if kept > 0 {
                return Ok(kept);
            }
        }
    }
}

/// See [`parse`] for the rule.
fn looks_like_header(fields: &::csv::ByteRecord, options: &CsvOptions) -> bool {
    let id_is_integer = fields
        .get(options.id_column)
        .map(is_integer)
        .unwrap_or(false);
    if id_is_integer {
        return false;
    }
    let numeric_columns: Vec<usize> = options
        .time_column
        .into_iter()
        .chain(options.size_column)
        .collect();
    numeric_columns.is_empty()
        || numeric_columns.iter().any(|&c| {
            fields
                .get(c)
                .map(|f| parse_seconds_as_micros(f).is_err())
                .unwrap_or(true)
        })
}

fn is_integer(field: &[u8]) -> bool {
    let digits = field.strip_prefix(b"-").unwrap_or(field);
    !digits.is_empty() && digits.iter().all(u8::is_ascii_digit)
}

/// Parses a non-negative number of seconds (integer or decimal) into
/// microseconds. Integers are converted exactly; decimals go through `f64`,
/// exact to the microsecond for any realistic trace time.
fn parse_seconds_as_micros(field: &[u8]) -> Result<u64, String> {
    let text = std::str::from_utf8(field).map_err(|_| "not UTF-8".to_string())?;
    if let Ok(seconds) = text.parse::<u64>() {
        return seconds
            .checked_mul(1_000_000)
            .ok_or_else(|| format!("{text:?} seconds overflows microseconds"));
    }
    match text.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && seconds >= 0.0 => {
            let micros = (seconds * 1e6).round();
            if micros < u64::MAX as f64 {
                Ok(micros as u64)
            } else {
                Err(format!("{text:?} seconds overflows microseconds"))
            }
        }
        _ => Err(format!("{text:?} is not a non-negative number of seconds")),
    }
}

fn parse_size(field: &[u8]) -> Result<u32, String> {
    let text = std::str::from_utf8(field).map_err(|_| "not UTF-8".to_string())?;
    text.parse::<u32>().map_err(|e| {
        format!(
            "{text:?} is not a size in bytes (an integer 0..={}): {e}",
            u32::MAX
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::hash_id;

    fn parse_str(text: &str, options: &CsvOptions) -> Result<(Vec<Request>, u64), TraceError> {
        parse(&mut text.as_bytes(), Path::new("t.csv"), options)
    }

    fn options(id: usize, time: Option<usize>, size: Option<usize>) -> CsvOptions {
        CsvOptions {
            id_column: id,
            time_column: time,
            size_column: size,
            ..CsvOptions::default()
        }
    }

    #[test]
    fn columns_header_and_zero_sizes() {
        let text = "time,obj,size\n1,10,100\n2.5,abc,0\n\n3,10,7\r\n";
        let (requests, skipped) = parse_str(text, &options(1, Some(0), Some(2))).unwrap();
        assert_eq!(skipped, 1);
        assert_eq!(
            requests,
            [
                Request::new(1_000_000, 10, 100),
                Request::new(3_000_000, 10, 7)
            ]
        );
    }

    #[test]
    fn header_detection_keeps_string_ids_with_numeric_columns() {
        let text = "alpha,1\nbeta,2\n";
        let (requests, _) = parse_str(text, &options(0, None, Some(1))).unwrap();
        assert_eq!(requests.len(), 2);
        assert_eq!(requests[0].id, hash_id(b"alpha"));
        assert_eq!(requests[1].time, 1, "time defaults to the data row index");
        // Without numeric columns a non-integer first id reads as a header...
        let (requests, _) = parse_str(text, &options(0, None, None)).unwrap();
        assert_eq!(requests.len(), 1);
        // ...unless told otherwise.
        let explicit = CsvOptions {
            has_header: Some(false),
            ..options(0, None, None)
        };
        assert_eq!(parse_str(text, &explicit).unwrap().0.len(), 2);
    }

    #[test]
    fn quoted_fields_and_other_delimiters() {
        let text = "\"a\"\"b\";5\n \"x;y\" ; 6\n";
        let opts = CsvOptions {
            delimiter: b';',
            has_header: Some(false),
            ..options(0, None, Some(1))
        };
        let (requests, _) = parse_str(text, &opts).unwrap();
        assert_eq!(requests[0].id, hash_id(b"a\"b"));
        assert_eq!(requests[1].id, hash_id(b"x;y"));
        assert_eq!(requests[1].size, 6);
    }

    #[test]
    fn quoted_fields_may_hold_line_breaks() {
        let text = "id,size\n\"multi\nline\",5\n7,6\n";
        let opts = options(0, None, Some(1));
        let (requests, _) = parse_str(text, &opts).unwrap();
        assert_eq!(requests.len(), 2);
        assert_eq!(requests[0].id, hash_id(b"multi\nline"));
        assert_eq!(requests[0].size, 5);
        assert_eq!(requests[1], Request::new(1, 7, 6));
        // The row after a quoted line break is reported by its own line.
        let err = parse_str("\"a\nb\",1\n9\n", &options(0, None, Some(1))).unwrap_err();
        assert!(matches!(err, TraceError::Csv { line: 3, .. }), "{err}");
    }

    #[test]
    fn errors_name_the_line_and_reason() {
        let err = parse_str("1,5\n2\n", &options(0, None, Some(1))).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, TraceError::Csv { line: 2, .. }), "{message}");
        assert!(
            message.contains("t.csv:2: missing size column 1"),
            "{message}"
        );

        let err = parse_str("1,5,x\n", &options(0, Some(2), None)).unwrap_err();
        assert!(matches!(err, TraceError::Csv { line: 1, .. }), "{err}");
        assert!(err.to_string().contains("time column 2"), "{err}");

        let err = parse_str("1,-3\n", &options(0, None, Some(1))).unwrap_err();
        assert!(err.to_string().contains("not a size"), "{err}");

        let err = parse_str("1,\"open\n", &options(1, None, None)).unwrap_err();
        assert!(err.to_string().contains("unterminated"), "{err}");
    }
}
