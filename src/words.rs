//! Words in output meant for people: a count with its noun in the right number.

/// `n` and the noun, plural unless `n` is 1: "1 warm job", "2 warm jobs".
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_is_singular_and_every_other_count_plural() {
        assert_eq!(super::count(1, "problem"), "1 problem");
        assert_eq!(super::count(0, "key"), "0 keys");
        assert_eq!(super::count(2, "warm job"), "2 warm jobs");
    }
}
