//! Where a problem is in the file: TOML keeps spans only while parsing, so fields are located by a light scan of
//! the text.

use std::ops::Range;

/// Finds lines for problems: TOML keeps spans only while parsing, so fields are located by a light scan of the text.
/// Built once per file, so that locating each of many problems costs only its own table's text.
pub struct LineIndex {
    source: String,
    /// Byte offset of every newline, in order.
    newlines: Vec<usize>,
    /// Byte ranges of each `[[name]]` table by name, header included.
    tables: std::collections::HashMap<String, Vec<Range<usize>>>,
}

impl LineIndex {
    pub fn new(source: &str) -> Self {
        // (offset, name of an array-of-tables header `[[name]]`, if it is one)
        let mut headers: Vec<(usize, Option<String>)> = Vec::new();
        let mut offset = 0;
        for line in source.split_inclusive('\n') {
            let trimmed = line.trim();
            if trimmed.starts_with('[') {
                let name = trimmed
                    .strip_prefix("[[")
                    .and_then(|rest| rest.split_once("]]"))
                    .map(|(name, _)| name.trim().to_string());
                headers.push((offset, name));
            }
            offset += line.len();
        }
        let mut tables: std::collections::HashMap<String, Vec<Range<usize>>> = std::collections::HashMap::new();
        for (i, (start, name)) in headers.iter().enumerate() {
            if let Some(name) = name {
                let end = headers.get(i + 1).map_or(source.len(), |(next, _)| *next);
                tables.entry(name.clone()).or_default().push(*start..end);
            }
        }
        Self {
            source: source.to_string(),
            newlines: source.match_indices('\n').map(|(at, _)| at).collect(),
            tables,
        }
    }

    pub(super) fn line_at(&self, byte: usize) -> usize {
        self.newlines.partition_point(|&newline| newline < byte) + 1
    }

    /// The line of `field = ...` inside `range`, or of the range's first line when `field` is `None`.
    fn field_in(&self, range: Range<usize>, field: Option<&str>) -> Option<usize> {
        let Some(field) = field else {
            return Some(self.line_at(range.start));
        };
        let mut offset = range.start;
        for line in self.source[range.clone()].split_inclusive('\n') {
            let trimmed = line.trim_start();
            if let Some(rest) = trimmed.strip_prefix(field)
                && rest.trim_start().starts_with('=')
            {
                return Some(self.line_at(offset));
            }
            offset += line.len();
        }
        None
    }

    pub(super) fn job_field_line(&self, index: usize, field: Option<&str>) -> Option<usize> {
        self.table_field_line("warm", index, field)
    }

    /// The line of `field` in the `index`th `[[name]]` table (of its header when `field` is `None` or absent).
    pub fn table_field_line(&self, name: &str, index: usize, field: Option<&str>) -> Option<usize> {
        let range = self.tables.get(name)?.get(index)?.clone();
        self.field_in(range.clone(), field)
            .or_else(|| self.field_in(range, None))
    }

    /// The line of `key` in `[section]` (or at the top level when `section` is `None`).
    pub fn key_line(&self, section: Option<&str>, key: &str) -> Option<usize> {
        let Some(section) = section else {
            let header = format!("[{key}]");
            let top_end = self.source.find("\n[").map_or(self.source.len(), |i| i + 1);
            return self
                .source
                .lines()
                .position(|line| line.trim() == header)
                .map(|i| i + 1)
                .or_else(|| self.field_in(0..top_end, Some(key)));
        };
        let header = format!("[{section}]");
        let mut offset = 0;
        let mut start = None;
        for line in self.source.split_inclusive('\n') {
            let trimmed = line.trim();
            if let Some(begin) = start {
                if trimmed.starts_with('[') {
                    return self.field_in(begin..offset, Some(key)).or(Some(self.line_at(begin)));
                }
            } else if trimmed == header {
                start = Some(offset);
            }
            offset += line.len();
        }
        start.and_then(|begin| {
            self.field_in(begin..self.source.len(), Some(key))
                .or(Some(self.line_at(begin)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_index_finds_job_fields() {
        let source = "[mysql]\nurl = \"x\"\n\n[[warm]]\nname = \"a\"\n\n[[warm]]\nname = \"b\"\nschedule = \"x\"\n";
        let lines = LineIndex::new(source);
        assert_eq!(lines.job_field_line(1, Some("schedule")), Some(9));
        assert_eq!(lines.job_field_line(0, Some("schedule")), Some(4));
        assert_eq!(lines.key_line(Some("mysql"), "url"), Some(2));
    }
}
