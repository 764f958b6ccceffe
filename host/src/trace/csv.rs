//! Delimited-text traces with configurable columns.

use std::borrow::Cow;
use std::io::Read;
use std::path::Path;

use super::input::for_each_line;
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
/// Fields may be double-quoted (RFC 4180, `""` for a quote, no line breaks
/// inside quotes). Blank lines are skipped.
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
    let mut requests = Vec::new();
    let mut skipped_zero_size = 0u64;
    let mut header_decided = options.has_header.is_some();
    let mut skip_first_row = options.has_header == Some(true);
    let mut data_rows = 0u64;
    for_each_line(reader, path, |line_number, line| {
        let row = trim_line_end(line);
        if row.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let fields = split(row, options.delimiter).map_err(|r| error(line_number, r))?;
        if !header_decided {
            header_decided = true;
            skip_first_row = looks_like_header(&fields, options);
        }
        if skip_first_row {
            skip_first_row = false;
            return Ok(());
        }

        let field = |column: usize, what: &str| {
            fields.get(column).map(|f| trim(f)).ok_or_else(|| {
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
        Ok(())
    })?;
    Ok((requests, skipped_zero_size))
}

/// See [`parse`] for the rule.
fn looks_like_header(fields: &[Cow<'_, [u8]>], options: &CsvOptions) -> bool {
    let id_is_integer = fields
        .get(options.id_column)
        .map(|f| is_integer(trim(f)))
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
                .map(|f| parse_seconds_as_micros(trim(f)).is_err())
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

/// Splits one row into fields, unquoting double-quoted ones. Borrowed unless
/// a field contains an escaped quote.
fn split(row: &[u8], delimiter: u8) -> Result<Vec<Cow<'_, [u8]>>, String> {
    let mut fields = Vec::new();
    let mut rest = row;
    loop {
        let start_trimmed = trim_start(rest);
        if start_trimmed.first() == Some(&b'"') {
            let (field, after) = quoted(&start_trimmed[1..])?;
            fields.push(field);
            let after = trim_start(after);
            match after.first() {
                None => return Ok(fields),
                Some(&c) if c == delimiter => rest = &after[1..],
                Some(_) => {
                    return Err(format!(
                        "unexpected text after the closing quote of field {}",
                        fields.len() - 1
                    ))
                }
            }
        } else {
            match rest.iter().position(|&c| c == delimiter) {
                Some(end) => {
                    fields.push(Cow::Borrowed(&rest[..end]));
                    rest = &rest[end + 1..];
                }
                None => {
                    fields.push(Cow::Borrowed(rest));
                    return Ok(fields);
                }
            }
        }
    }
}

/// Parses the inside of a quoted field (opening quote already consumed);
/// returns the field and what follows the closing quote.
fn quoted(input: &[u8]) -> Result<(Cow<'_, [u8]>, &[u8]), String> {
    let mut owned: Option<Vec<u8>> = None;
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'"' {
            if input.get(i + 1) == Some(&b'"') {
                // Escaped quote: from here on the field differs from the input.
                owned.get_or_insert_with(|| input[..i].to_vec()).push(b'"');
                i += 2;
                continue;
            }
            let field = match owned {
                Some(bytes) => Cow::Owned(bytes),
                None => Cow::Borrowed(&input[..i]),
            };
            return Ok((field, &input[i + 1..]));
        }
        if let Some(bytes) = owned.as_mut() {
            bytes.push(input[i]);
        }
        i += 1;
    }
    Err("unterminated quoted field".to_string())
}

fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn trim_start(field: &[u8]) -> &[u8] {
    let start = field
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(field.len());
    &field[start..]
}

fn trim(field: &[u8]) -> &[u8] {
    field.trim_ascii()
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
