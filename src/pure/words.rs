//! Words in output meant for people: a count with its noun in the right number, and one way each to write a
//! duration, a time and a size.

/// Of `candidates`, the one `word` most likely misspells (at most a third of its letters, and two, off: a typo, not
/// another word), for "did you mean"; case does not count.
pub(crate) fn closest<'c>(word: &str, candidates: impl IntoIterator<Item = &'c str>) -> Option<&'c str> {
    let word = word.to_lowercase();
    let limit = (word.chars().count() / 3).clamp(1, 2);
    candidates
        .into_iter()
        .map(|candidate| (edit_distance(&word, &candidate.to_lowercase()), candidate))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// `" (did you mean `x`?)"` for [`closest`], or nothing.
pub(crate) fn did_you_mean<'c>(word: &str, candidates: impl IntoIterator<Item = &'c str>) -> String {
    closest(word, candidates).map_or_else(String::new, |found| format!(" (did you mean `{found}`?)"))
}

/// Levenshtein distance, with a swap of two neighbours counted as one edit.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

/// An error chain as one line (`{error:#}`) with each part said once: a library that repeats its source in its own
/// message (`Connection refused: Connection refused`) would otherwise say the same thing two or three times.
pub(crate) fn error_chain(error: &anyhow::Error) -> String {
    let text = format!("{error:#}");
    let mut said: Vec<&str> = Vec::new();
    for part in text.split(": ") {
        if !said.contains(&part) {
            said.push(part);
        }
    }
    said.join(": ")
}

/// `n` and the noun, plural unless `n` is 1: "1 warm job", "2 warm jobs".
pub(crate) fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// A duration as configuration files write it: `24h`, `1h30m`, `45s`, `23h47m32.714s`, `250ms` (hours are the
/// largest unit, so a TTL of a day reads `24h` as it was likely written).
pub(crate) fn duration(d: std::time::Duration) -> String {
    let (secs, millis) = (d.as_secs(), d.subsec_millis());
    if secs == 0 {
        return if millis == 0 {
            "0s".into()
        } else {
            format!("{millis}ms")
        };
    }
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    match (s, millis) {
        (0, 0) => {}
        (s, 0) => out.push_str(&format!("{s}s")),
        (s, ms) => out.push_str(&format!("{s}.{ms:03}s")),
    }
    out
}

/// [`duration`] of a number of seconds as JSON documents carry them (`duration_seconds`); negative reads as 0.
pub(crate) fn seconds(seconds: f64) -> String {
    duration(std::time::Duration::from_secs_f64(seconds.max(0.0)))
}

/// A time as RFC 3339 in UTC to the second, the one format every command and endpoint prints:
/// `2026-11-26T17:30:00Z`.
pub(crate) fn time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A size in bytes with a binary unit, three significant digits: `356 B`, `1.50 KiB`, `12.3 MiB`, `1.00 GiB`.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1023.995 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    let decimals = if value >= 99.95 {
        0
    } else if value >= 9.995 {
        1
    } else {
        2
    };
    format!("{value:.decimals$} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_typo_is_matched_to_the_word_it_misspells_and_another_word_is_not() {
        let fields = ["schedule", "query", "refresh_query", "key", "ttl"];
        assert_eq!(super::closest("shedule", fields), Some("schedule"));
        assert_eq!(super::closest("qeury", fields), Some("query"));
        assert_eq!(super::closest("TTL", fields), Some("ttl"));
        assert_eq!(super::closest("refresh", fields), None);
        assert_eq!(super::closest("xyz", fields), None);
        assert_eq!(
            super::did_you_mean("top_prodcts", ["top_products"]),
            " (did you mean `top_products`?)"
        );
        assert_eq!(super::did_you_mean("anything", ["top_products"]), "");
    }

    #[test]
    fn one_is_singular_and_every_other_count_plural() {
        assert_eq!(super::count(1, "problem"), "1 problem");
        assert_eq!(super::count(0, "key"), "0 keys");
        assert_eq!(super::count(2, "warm job"), "2 warm jobs");
    }

    #[test]
    fn durations_read_as_they_are_written() {
        use std::time::Duration;
        assert_eq!(super::duration(Duration::from_secs(86_400)), "24h");
        assert_eq!(super::duration(Duration::from_secs(5_400)), "1h30m");
        assert_eq!(super::duration(Duration::from_secs(45)), "45s");
        assert_eq!(super::duration(Duration::from_millis(85_652_714)), "23h47m32.714s");
        assert_eq!(super::duration(Duration::from_millis(250)), "250ms");
        assert_eq!(super::duration(Duration::ZERO), "0s");
        assert_eq!(super::duration(Duration::from_millis(60_500)), "1m0.500s");
    }

    #[test]
    fn times_are_rfc3339_utc_to_the_second() {
        let t = chrono::DateTime::parse_from_rfc3339("2026-11-26T18:30:00.250+01:00").unwrap();
        assert_eq!(super::time(t.to_utc()), "2026-11-26T17:30:00Z");
    }

    #[test]
    fn sizes_carry_a_unit() {
        assert_eq!(super::bytes(0), "0 B");
        assert_eq!(super::bytes(356), "356 B");
        assert_eq!(super::bytes(1536), "1.50 KiB");
        assert_eq!(super::bytes(12_900_000), "12.3 MiB");
        assert_eq!(super::bytes(300 * 1024 * 1024), "300 MiB");
        assert_eq!(super::bytes(1024 * 1024 - 1), "1.00 MiB");
        assert_eq!(super::bytes(1 << 30), "1.00 GiB");
    }

    #[test]
    fn an_error_chain_says_each_part_once() {
        let io = std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "Connection refused (os error 111)",
        );
        let error = anyhow::Error::new(io).context("cannot connect to Redis: Connection refused (os error 111)");
        assert_eq!(
            super::error_chain(&error.context("Redis at redis://h:6379/0")),
            "Redis at redis://h:6379/0: cannot connect to Redis: Connection refused (os error 111)"
        );
    }
}
