//! Plain-text tables for a terminal: each column as wide as its widest cell,
//! so names of any length (a policy file, a cluster session id) never push
//! the columns after them out of line.

use std::fmt::Write;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    /// Names and words.
    Left,
    /// Numbers, so their digits line up.
    Right,
}

/// A header row, then rows of cells, with optional blank lines between groups.
#[derive(Clone, Debug)]
pub struct TextTable {
    headers: Vec<String>,
    aligns: Vec<Align>,
    /// `None` is a blank line.
    rows: Vec<Option<Vec<String>>>,
}

/// Between two columns: one space reads as a single phrase when both cells
/// are words.
const GAP: &str = "  ";

impl TextTable {
    pub fn new<'a>(columns: impl IntoIterator<Item = (&'a str, Align)>) -> Self {
        let (headers, aligns) = columns
            .into_iter()
            .map(|(header, align)| (header.to_owned(), align))
            .unzip();
        Self {
            headers,
            aligns,
            rows: Vec::new(),
        }
    }

    /// Adds a row; cells past the last column are dropped and missing ones
    /// left blank, so a row can never shift the others.
    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        let mut cells: Vec<String> = cells
            .into_iter()
            .take(self.headers.len())
            .map(Into::into)
            .collect();
        cells.resize(self.headers.len(), String::new());
        self.rows.push(Some(cells));
    }

    /// A blank line before the next row, to separate groups.
    pub fn gap(&mut self) {
        self.rows.push(None);
    }

    /// Every line ends in a newline and carries no trailing spaces. Widths
    /// count characters, not bytes, so a non-ASCII name stays in line.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for cells in self.rows.iter().flatten() {
            for (width, cell) in widths.iter_mut().zip(cells) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let mut line = |cells: &[String]| {
            let mut text = String::new();
            for ((cell, &width), align) in cells.iter().zip(&widths).zip(&self.aligns) {
                let _ = match align {
                    Align::Left => write!(text, "{cell:<width$}{GAP}"),
                    Align::Right => write!(text, "{cell:>width$}{GAP}"),
                };
            }
            out.push_str(text.trim_end());
            out.push('\n');
        };
        line(&self.headers);
        for row in &self.rows {
            match row {
                Some(cells) => line(cells),
                None => line(&[]),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where each column starts on a line, found from the header's words.
    fn starts(line: &str, words: &[&str]) -> Vec<usize> {
        words
            .iter()
            .map(|w| line.find(w).expect("header word"))
            .collect()
    }

    #[test]
    fn text_table_sizes_columns_to_their_widest_cell() {
        let mut table = TextTable::new([
            ("NAME", Align::Left),
            ("SIZE", Align::Right),
            ("FILE", Align::Left),
        ]);
        table.row(["wtinylfu-tuned", "107623", "policies/wtinylfu-tuned.wasm"]);
        table.row(["lru", "-", "(built in)"]);
        table.gap();
        table.row(["é", "5", "x"]);
        let text = table.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "NAME              SIZE  FILE",
                "wtinylfu-tuned  107623  policies/wtinylfu-tuned.wasm",
                "lru                  -  (built in)",
                "",
                "é                    5  x",
            ]
        );
        assert!(text.ends_with('\n'));
        let header = starts(lines[0], &["NAME", "FILE"]);
        assert_eq!(header, starts(lines[1], &["wtinylfu-tuned", "policies"]));
    }

    #[test]
    fn text_table_rows_never_shift_the_columns() {
        let mut table = TextTable::new([("A", Align::Left), ("B", Align::Right)]);
        table.row(["one"]);
        table.row(["two", "2", "extra"]);
        assert_eq!(table.render(), "A    B\none\ntwo  2\n");
    }
}
