//! Where a problem is in the file: the spans TOML's parser gives each key and each table, as line numbers.

use std::collections::HashMap;

use toml::de::{DeTable, DeValue};

/// The line of every key of the file, read once per file from the parser's spans (a file that does not parse
/// yields what could be read before the error).
pub(crate) struct LineIndex {
    /// Byte offset of every newline, in order.
    newlines: Vec<usize>,
    /// `(section, key)` → line: `("", key)` at the top level (a `[section]`'s own line is its key's), and the keys
    /// of each `[section]`.
    keys: HashMap<(String, String), usize>,
    /// Each `[[name]]` table in order: its header's line and the line of each of its keys.
    tables: HashMap<String, Vec<TableLines>>,
}

struct TableLines {
    header: usize,
    fields: HashMap<String, usize>,
}

impl LineIndex {
    pub(crate) fn new(source: &str) -> Self {
        let mut index = Self {
            newlines: source.match_indices('\n').map(|(at, _)| at).collect(),
            keys: HashMap::new(),
            tables: HashMap::new(),
        };
        let (root, _errors) = DeTable::parse_recoverable(source);
        for (key, value) in root.get_ref().iter() {
            let name = key.get_ref().to_string();
            index
                .keys
                .insert((String::new(), name.clone()), index.line_at(key.span().start));
            match value.get_ref() {
                DeValue::Table(table) => {
                    for (field, _) in table.iter() {
                        let line = index.line_at(field.span().start);
                        index.keys.insert((name.clone(), field.get_ref().to_string()), line);
                    }
                }
                DeValue::Array(array) => {
                    let tables = array
                        .iter()
                        .filter_map(|element| match element.get_ref() {
                            DeValue::Table(table) => Some(TableLines {
                                header: index.line_at(element.span().start),
                                fields: table
                                    .iter()
                                    .map(|(field, _)| (field.get_ref().to_string(), index.line_at(field.span().start)))
                                    .collect(),
                            }),
                            _ => None,
                        })
                        .collect::<Vec<_>>();
                    if !tables.is_empty() {
                        index.tables.insert(name, tables);
                    }
                }
                _ => {}
            }
        }
        index
    }

    pub(super) fn line_at(&self, byte: usize) -> usize {
        self.newlines.partition_point(|&newline| newline < byte) + 1
    }

    pub(super) fn job_field_line(&self, index: usize, field: Option<&str>) -> Option<usize> {
        self.table_field_line("warm", index, field)
    }

    /// The line of `field` in the `index`th `[[name]]` table (of its header when `field` is `None` or absent).
    pub(crate) fn table_field_line(&self, name: &str, index: usize, field: Option<&str>) -> Option<usize> {
        let table = self.tables.get(name)?.get(index)?;
        Some(
            field
                .and_then(|field| table.fields.get(field).copied())
                .unwrap_or(table.header),
        )
    }

    /// The line of `key` in `[section]` (that of the section when it lacks the key), or at the top level when
    /// `section` is `None` (a section's own line for a section's name).
    pub(crate) fn key_line(&self, section: Option<&str>, key: &str) -> Option<usize> {
        let top = |key: &str| self.keys.get(&(String::new(), key.to_string())).copied();
        match section {
            None => top(key),
            Some(section) => self
                .keys
                .get(&(section.to_string(), key.to_string()))
                .copied()
                .or_else(|| top(section)),
        }
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
        assert_eq!(lines.key_line(None, "mysql"), Some(1));
        assert_eq!(
            lines.key_line(Some("mysql"), "pool_size"),
            Some(1),
            "an absent key: its section"
        );
    }

    #[test]
    fn spans_find_what_a_scan_of_the_text_would_not() {
        let source = "top = 1\n[redis]\n  \"url\" = \"x\"\n[[on_change]]\ntable = \"t\"\n[on_change.project]\nkey = \"k\"\n\
                      [[on_change]]\ntable = \"u\"\nwarm = [\n  \"j\",\n]\n[binlog]\ncheckpoint.file = \"/x\"\n";
        let lines = LineIndex::new(source);
        assert_eq!(lines.key_line(None, "top"), Some(1));
        assert_eq!(lines.key_line(Some("redis"), "url"), Some(3), "a quoted key");
        assert_eq!(
            lines.table_field_line("on_change", 0, Some("project")),
            Some(6),
            "a sub-table's header"
        );
        assert_eq!(lines.table_field_line("on_change", 1, Some("warm")), Some(10));
        assert_eq!(
            lines.table_field_line("on_change", 1, Some("delete")),
            Some(8),
            "absent: the header"
        );
        assert_eq!(lines.key_line(Some("binlog"), "checkpoint"), Some(14), "a dotted key");
        assert_eq!(lines.table_field_line("on_change", 2, None), None);
    }

    #[test]
    fn a_file_that_does_not_parse_still_locates_what_came_before_the_error() {
        let lines = LineIndex::new("[mysql]\nurl = \"x\"\npool_size = = 3\n");
        assert_eq!(lines.key_line(Some("mysql"), "url"), Some(2));
    }
}
