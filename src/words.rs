//! Words in output meant for people: a count with its noun in the right number, and one way to write a duration.

/// `n` and the noun, plural unless `n` is 1: "1 warm job", "2 warm jobs".
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// A duration as configuration files write it: `24h`, `1h30m`, `45s`, `23h47m32.714s`, `250ms` (hours are the
/// largest unit, so a TTL of a day reads `24h` as it was likely written).
pub fn duration(d: std::time::Duration) -> String {
    let (secs, millis) = (d.as_secs(), d.subsec_millis());
    if secs == 0 {
        return format!("{millis}ms");
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

#[cfg(test)]
mod tests {
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
        assert_eq!(super::duration(Duration::from_millis(60_500)), "1m0.500s");
    }
}
