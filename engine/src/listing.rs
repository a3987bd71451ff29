//! Listing rows for `list`, `avail` and `ancestry`: the computed fields,
//! `FIELD=VALUE` filters, `-s` sorting and the plain-text table. The CLI only
//! prints the strings made here.
//!
//! A row is a manifest plus where the image lives plus computed fields. The
//! manifest itself is kept untouched for `-j` output (the real imgadm writes
//! computed fields into the manifest, so `list -j FILTER` leaks them; we do
//! not).

use std::cmp::Ordering;

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::manifest::{js, Manifest};

/// `list` and `avail` default `-o`.
pub const LIST_COLUMNS: &[&str] = &["uuid", "name", "version", "os", "type", "pub"];
/// `list` and `avail` default `-s`.
pub const LIST_SORT: &[&str] = &["published_at", "name"];
/// `ancestry` default `-o` (ancestry does not sort: image first, base last).
pub const ANCESTRY_COLUMNS: &[&str] = &["uuid", "name", "version", "published"];

/// Where a listed image is, besides its manifest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RowExtras {
    /// The pool the image is installed on (`list`, `ancestry`).
    pub zpool: Option<String>,
    /// The source URL the image came from (or is available from, `avail`).
    pub source: Option<String>,
    /// Datasets cloned from the image (`list`); the `clones` field counts them.
    pub clone_names: Option<Vec<String>>,
    /// The pool driver (`zfs` or `dir`).
    pub driver: Option<String>,
}

/// One listed image: its manifest, its extras and the fields filters, sort
/// and table columns see (manifest fields, extras and computed fields).
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    manifest: Manifest,
    extras: RowExtras,
    fields: Map<String, Value>,
}

impl Row {
    pub fn new(manifest: Manifest, extras: RowExtras) -> Row {
        let mut fields = manifest.as_map().clone();
        let mut put = |key: &str, value: Value| {
            fields.insert(key.to_string(), value);
        };

        if let Some(published_at) = manifest.published_at() {
            let date: String = published_at.chars().take(10).collect();
            put("published_date", Value::String(date.clone()));
            put("pub", Value::String(date));
            put("published", Value::String(strip_fractional_seconds(published_at)));
        }
        if let Some(source) = &extras.source {
            put("source", Value::String(source.clone()));
        }
        if let Some(clone_names) = &extras.clone_names {
            put("clones", Value::from(clone_names.len()));
        }
        if let Some(zpool) = &extras.zpool {
            put("zpool", Value::String(zpool.clone()));
        }
        if let Some(driver) = &extras.driver {
            put("driver", Value::String(driver.clone()));
        }
        if let Some(size) = manifest
            .get("files")
            .and_then(|files| files.get(0))
            .and_then(|file| file.get("size"))
        {
            put("size", size.clone());
        }
        if manifest.type_() == Some("docker") {
            let tags = manifest.get("tags").and_then(Value::as_object);
            if let Some(docker_id) = tags.and_then(|t| t.get("docker:id")).and_then(Value::as_str) {
                put("docker_id", Value::String(docker_id.to_string()));
                put("docker_short_id", Value::String(docker_short_id(docker_id)));
            }
            if let Some(repo) = tags.and_then(|t| t.get("docker:repo")) {
                put("docker_repo", repo.clone());
            }
            let docker_tags: Vec<Value> = tags
                .into_iter()
                .flat_map(|t| t.keys())
                .filter_map(|key| key.strip_prefix("docker:tag:"))
                .map(|tag| Value::String(tag.to_string()))
                .collect();
            put("docker_tags", Value::Array(docker_tags));
        }

        Row {
            manifest,
            extras,
            fields,
        }
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// `list --docker`: the row once per docker tag (once with `-` when it
    /// has none), under the table's own column names.
    fn docker_tag_rows(&self) -> Vec<Row> {
        let tags: Vec<Value> = match self.field("docker_tags").and_then(Value::as_array) {
            Some(tags) if !tags.is_empty() => tags.clone(),
            _ => vec![Value::Null],
        };
        let copy = |key: &str| self.field(key).cloned().unwrap_or(Value::Null);
        tags.into_iter()
            .map(|tag| {
                let mut row = Row { manifest: self.manifest.clone(), extras: self.extras.clone(), fields: self.fields.clone() };
                for (column, value) in [
                    ("repository", copy("docker_repo")),
                    ("tag", tag),
                    ("image_id", copy("docker_short_id")),
                    ("created", copy("published")),
                ] {
                    row.fields.insert(column.to_string(), value);
                }
                row
            })
            .collect()
    }

    pub fn extras(&self) -> &RowExtras {
        &self.extras
    }

    /// A top-level row field (manifest, extra or computed).
    pub fn field(&self, name: &str) -> Option<&Value> {
        self.fields.get(name)
    }

    pub fn fields(&self) -> &Map<String, Value> {
        &self.fields
    }

    /// The `-j` form of the row: `{manifest, zpool?, driver?, source?,
    /// cloneNames?, clones?}`, with the manifest exactly as stored.
    pub fn info_json(&self) -> Value {
        let mut info = Map::new();
        info.insert("manifest".to_string(), self.manifest.to_value());
        if let Some(zpool) = &self.extras.zpool {
            info.insert("zpool".to_string(), Value::String(zpool.clone()));
        }
        if let Some(driver) = &self.extras.driver {
            info.insert("driver".to_string(), Value::String(driver.clone()));
        }
        if let Some(source) = &self.extras.source {
            info.insert("source".to_string(), Value::String(source.clone()));
        }
        if let Some(clone_names) = &self.extras.clone_names {
            info.insert("cloneNames".to_string(), Value::from(clone_names.clone()));
            info.insert("clones".to_string(), Value::from(clone_names.len()));
        }
        Value::Object(info)
    }

    /// A dotted field (`requirements.brand`, `tags.docker:repo`,
    /// `files.0.size`): each step looks up an object key or an array index.
    fn lookup(&self, path: &[String]) -> Option<&Value> {
        let (first, rest) = path.split_first()?;
        rest.iter()
            .try_fold(self.fields.get(first)?, |value, step| match value {
                Value::Object(map) => map.get(step),
                Value::Array(items) => step.parse::<usize>().ok().and_then(|i| items.get(i)),
                _ => None,
            })
    }
}

/// `published_at` with a trailing `.<digits>Z` replaced by `Z`.
fn strip_fractional_seconds(published_at: &str) -> String {
    let fraction = published_at.strip_suffix('Z').and_then(|head| {
        let dot = head.rfind('.')?;
        let digits = &head[dot + 1..];
        (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then_some(dot)
    });
    match fraction {
        Some(dot) => format!("{}Z", &published_at[..dot]),
        None => published_at.to_string(),
    }
}

/// `list --docker`'s fixed columns (headers UUID REPOSITORY TAG IMAGE_ID
/// CREATED).
pub const DOCKER_COLUMNS: &[&str] = &["uuid", "repository", "tag", "image_id", "created"];

/// `list --docker`: the docker images that are no listed docker image's
/// origin (the heads of their layer chains), a row per tag, oldest first.
pub fn docker_heads(rows: Vec<Row>) -> Vec<Row> {
    let docker: Vec<Row> = rows.into_iter().filter(|r| r.manifest.type_() == Some("docker")).collect();
    let origins: std::collections::HashSet<String> =
        docker.iter().filter_map(|r| r.manifest.get("origin").and_then(Value::as_str)).map(str::to_string).collect();
    let mut heads: Vec<Row> = docker
        .iter()
        .filter(|r| !r.field("uuid").and_then(Value::as_str).is_some_and(|uuid| origins.contains(uuid)))
        .flat_map(Row::docker_tag_rows)
        .collect();
    sort_rows(&mut heads, &[SortKey { field: "published_at".to_string(), reverse: false }]);
    heads
}

/// Docker's short image id: 12 hex digits. The real imgadm takes the first
/// 12 characters of `docker:id`, which for registry v2 ids is
/// `sha256:xxxxx`; we skip the algorithm prefix.
fn docker_short_id(docker_id: &str) -> String {
    let hex = docker_id.split_once(':').map_or(docker_id, |(_, hex)| hex);
    hex.chars().take(12).collect()
}

/// What a filter compares the row's value with.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Expected {
    /// `true` / `false`: the value must be that JSON boolean.
    Bool(bool),
    /// `~TEXT`: a substring of a string value, or an element of an array.
    Contains(String),
    /// Anything else: `String(value)` must equal it.
    Equals(String),
}

/// One positional `FIELD=VALUE` filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    field: String,
    path: Vec<String>,
    expected: Expected,
}

impl Filter {
    pub fn parse(arg: &str) -> Result<Filter> {
        let (field, value) = arg.split_once('=').ok_or_else(|| {
            Error::Usage(format!(
                "invalid filter: \"{arg}\" (must be of the form \"field=value\")"
            ))
        })?;
        let expected = match value {
            "true" => Expected::Bool(true),
            "false" => Expected::Bool(false),
            _ => match value.strip_prefix('~') {
                Some(needle) => Expected::Contains(needle.to_string()),
                None => Expected::Equals(value.to_string()),
            },
        };
        Ok(Filter {
            field: field.to_string(),
            path: field.split('.').map(str::to_string).collect(),
            expected,
        })
    }

    pub fn field(&self) -> &str {
        &self.field
    }

    /// A row without the field never matches.
    pub fn matches(&self, row: &Row) -> bool {
        let Some(actual) = row.lookup(&self.path) else {
            return false;
        };
        match &self.expected {
            Expected::Bool(b) => actual.as_bool() == Some(*b),
            Expected::Contains(needle) => match actual {
                Value::String(s) => s.contains(needle.as_str()),
                Value::Array(items) => items.iter().any(|item| item.as_str() == Some(needle)),
                _ => false,
            },
            Expected::Equals(text) => js::to_js_string(actual) == *text,
        }
    }
}

/// All the filters of a command line, ANDed; a field given twice keeps its
/// last value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filters(Vec<Filter>);

impl Filters {
    pub fn parse<S: AsRef<str>>(args: impl IntoIterator<Item = S>) -> Result<Filters> {
        let mut filters: Vec<Filter> = Vec::new();
        for arg in args {
            let filter = Filter::parse(arg.as_ref())?;
            match filters.iter_mut().find(|f| f.field == filter.field) {
                Some(earlier) => *earlier = filter,
                None => filters.push(filter),
            }
        }
        Ok(Filters(filters))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, row: &Row) -> bool {
        self.0.iter().all(|f| f.matches(row))
    }

    pub fn apply(&self, rows: Vec<Row>) -> Vec<Row> {
        rows.into_iter().filter(|row| self.matches(row)).collect()
    }
}

/// Splits a `-o`/`-s` list: commas, with any whitespace around them.
pub fn parse_field_list(option: &str, text: &str) -> Result<Vec<String>> {
    let fields: Vec<String> = text.trim().split(',').map(|f| f.trim().to_string()).collect();
    if fields.iter().any(String::is_empty) {
        return Err(Error::Usage(format!(
            "invalid {option} field list: \"{text}\" (empty field name)"
        )));
    }
    Ok(fields)
}

/// One `-s` key: a top-level row field, `-field` to reverse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SortKey {
    field: String,
    reverse: bool,
}

impl SortKey {
    pub fn parse(key: &str) -> Result<SortKey> {
        let (field, reverse) = match key.strip_prefix('-') {
            Some(field) => (field, true),
            None => (key, false),
        };
        if field.is_empty() {
            return Err(Error::Usage(format!("invalid sort field: \"{key}\"")));
        }
        Ok(SortKey {
            field: field.to_string(),
            reverse,
        })
    }

    /// Parses a `-s` option value (`published_at,-name`).
    pub fn parse_list(text: &str) -> Result<Vec<SortKey>> {
        parse_field_list("-s", text)?
            .iter()
            .map(|key| SortKey::parse(key))
            .collect()
    }

    fn compare(&self, a: &Row, b: &Row) -> Ordering {
        let order = compare_values(a.field(&self.field), b.field(&self.field));
        if self.reverse {
            order.reverse()
        } else {
            order
        }
    }
}

/// Sorts rows by the keys in priority order; the sort is stable.
pub fn sort_rows(rows: &mut [Row], keys: &[SortKey]) {
    rows.sort_by(|a, b| {
        keys.iter()
            .map(|key| key.compare(a, b))
            .find(|order| order.is_ne())
            .unwrap_or(Ordering::Equal)
    });
}

/// tabula's comparison: numerically when both values are numbers to
/// JavaScript's `Number()`, else a missing value first, else as strings.
/// Values that are neither (a number against a word) compare equal, as
/// JavaScript's `<` and `>` are both false for them.
fn compare_values(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    let (a_number, b_number) = (
        a.map_or(f64::NAN, js::to_number),
        b.map_or(f64::NAN, js::to_number),
    );
    if !a_number.is_nan() && !b_number.is_nan() {
        return a_number.partial_cmp(&b_number).unwrap_or(Ordering::Equal);
    }
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(a), Some(b)) => match (as_js_primitive_string(a), as_js_primitive_string(b)) {
            (Some(a), Some(b)) => a.cmp(&b),
            _ => Ordering::Equal,
        },
    }
}

/// The string JavaScript compares a value as, when it compares it as one:
/// strings, and objects and arrays (converted with `String()`).
fn as_js_primitive_string(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Array(_) | Value::Object(_) => Some(js::to_js_string(value)),
        Value::Null | Value::Bool(_) | Value::Number(_) => None,
    }
}

/// A table cell: strings and numbers as they are, missing or null as `-`,
/// anything else as compact JSON.
fn cell(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "-".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => js::format_number(n),
        Some(other) => other.to_string(),
    }
}

/// The plain-text table: an upper-cased header line (unless `header` is
/// false), left-aligned columns two spaces apart, the last column unpadded,
/// every line ending in `\n`. No rows make an empty string, header and all.
pub fn render_table<S: AsRef<str>>(rows: &[Row], columns: &[S], header: bool) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let mut lines: Vec<Vec<String>> = Vec::with_capacity(rows.len() + 1);
    if header {
        lines.push(columns.iter().map(|c| c.as_ref().to_uppercase()).collect());
    }
    for row in rows {
        lines.push(columns.iter().map(|c| cell(row.field(c.as_ref()))).collect());
    }
    let widths: Vec<usize> = (0..columns.len())
        .map(|i| {
            lines
                .iter()
                .map(|line| line[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();

    let mut out = String::new();
    for line in &lines {
        let mut text_line = String::new();
        let last = line.len().saturating_sub(1);
        for (i, text) in line.iter().enumerate() {
            text_line.push_str(text);
            if i != last {
                text_line.extend(std::iter::repeat_n(' ', widths[i] - text.chars().count() + 2));
            }
        }
        // An empty last cell would leave the padding of the one before it.
        out.push_str(text_line.trim_end_matches(' '));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractional_seconds_are_stripped_only_at_the_end() {
        assert_eq!(
            strip_fractional_seconds("2018-10-11T12:45:24.804Z"),
            "2018-10-11T12:45:24Z"
        );
        assert_eq!(
            strip_fractional_seconds("2018-10-11T12:45:24Z"),
            "2018-10-11T12:45:24Z"
        );
        assert_eq!(
            strip_fractional_seconds("2018-10-11T12:45:24.Z"),
            "2018-10-11T12:45:24.Z"
        );
        assert_eq!(strip_fractional_seconds("weird.5"), "weird.5");
    }

    #[test]
    fn docker_short_id_skips_the_algorithm() {
        assert_eq!(docker_short_id("sha256:62487cf6a7f698af4edc"), "62487cf6a7f6");
        assert_eq!(docker_short_id("62487cf6a7f698af4edc"), "62487cf6a7f6");
    }
}
