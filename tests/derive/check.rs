//! check names what is not covered and why, and rules prints what can be frozen.

use super::*;

#[test]
fn check_names_what_is_not_covered_and_rules_prints_what_can_be_frozen() {
    let dir = tempfile::tempdir().unwrap();
    let connections = "[mysql]\nurl = \"mysql://root@127.0.0.1:1/shop\"\n[redis]\nurl = \"redis://127.0.0.1:1\"\n";
    let binlog = "[binlog]\nserver_id = 7\nderive_rules = true\n";
    let jobs = r#"
[[warm]]
name = "products"
schedule = "every 1h"
query = "SELECT p.id, p.name, c.name AS category FROM products p JOIN categories c ON c.id = p.category_id WHERE p.status = 'active'"
refresh_query = "SELECT p.id, p.name, c.name AS category FROM products p JOIN categories c ON c.id = p.category_id WHERE p.status = 'active' AND p.id = :id"
key = "product:{id}"
ttl = "1h"

[[warm]]
name = "regional"
schedule = "every 1h"
query = "SELECT p.id, r.name AS region FROM products p JOIN categories c ON c.id = p.category_id JOIN regions r ON r.id = c.region_id"
key = "regional:{id}"
ttl = "2h"

[[warm]]
name = "counts"
schedule = "every 1h"
query = "SELECT category_id, COUNT(*) AS n FROM products GROUP BY category_id"
key = "count:{category_id}"
ttl = "1h"

[[warm]]
name = "recent"
schedule = "every 1h"
query = "SELECT id FROM orders WHERE created_at > NOW() - INTERVAL 1 DAY"
key = "recent:{id}"
ttl = "10m"
"#;
    let path = dir.path().join("jobs.toml");
    std::fs::write(&path, format!("{connections}{binlog}{jobs}")).unwrap();
    let run = |args: &[&str]| {
        let (code, stdout, stderr) = common::cli_output(args, &path);
        (code, (stdout, stderr))
    };
    let (code, (stdout, _)) = run(&["check"]);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        stdout.contains("shop.products  derived: a changed row refreshes its key"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "shop.categories  derived: a changed row refreshes the keys of the products rows that join it \
             (c.id = p.category_id)"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("shop.regions  derived: it joins r through another table")
            && stdout.contains("a change re-runs the job (debounced"),
        "{stdout}"
    );
    assert!(
        stdout.contains("recent: TTL only: NOW() changes without any row changing"),
        "{stdout}"
    );
    assert!(stdout.contains("keys may stay stale up to the TTL (10m)"), "{stdout}");
    let (code, (_, stderr)) = run(&["check", "--strict"]);
    assert_eq!(code, Some(78), "{stderr}");

    // Frozen: derive_rules off, the printed rules pasted in; the effective rules are the same.
    let (code, (rules, _)) = run(&["rules"]);
    assert_eq!(code, Some(0));
    assert!(rules.contains("where = \"`status` = 'active'\""), "{rules}");
    assert!(rules.contains("warm = [\"counts\"]"), "{rules}");
    assert!(
        rules.contains(
            "lookup = { job = \"products\", table = \"shop.products\", on = { category_id = \"id\" }, \
             key = \"product:{id}\", refresh = true }"
        ),
        "{rules}"
    );
    let frozen = format!("{connections}[binlog]\nserver_id = 7\nderive_debounce = \"30s\"\n{jobs}\n{rules}");
    std::fs::write(&path, frozen).unwrap();
    let (code, (refrozen, stderr)) = run(&["rules"]);
    assert_eq!(code, Some(0), "{stderr}");
    let headless = |text: &str| -> String {
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(headless(&refrozen), headless(&rules));
    let (_, (stdout, _)) = run(&["rules", "--format", "json", "--job", "counts"]);
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json.as_array().map(Vec::len), Some(1), "{stdout}");
    assert_eq!(json[0]["table"], "shop.products");
    let (code, _) = run(&["rules", "--job", "nope"]);
    assert_eq!(code, Some(64));
}

#[test]
fn check_names_every_shape_the_binlog_cannot_follow_and_the_rule_that_covers_it_where_one_can() {
    let dir = tempfile::tempdir().unwrap();
    // (query, key placeholder, what check must say, whether a re-run on any change covers it)
    let shapes = [
        (
            "SELECT id FROM sessions WHERE seen > NOW() - INTERVAL 1 HOUR",
            "id",
            "NOW() changes without any row changing",
            false,
        ),
        (
            "SELECT id FROM products ORDER BY RAND()",
            "id",
            "RAND() changes without any row changing",
            false,
        ),
        (
            "SELECT id FROM products WHERE owner = @me",
            "id",
            "it reads the variable @me",
            false,
        ),
        (
            "SELECT id FROM products WHERE id IN (SELECT product_id FROM hits)",
            "id",
            "it has a subquery",
            true,
        ),
        (
            "SELECT id FROM products UNION SELECT id FROM archived",
            "id",
            "UNION",
            true,
        ),
        (
            "SELECT id, ROW_NUMBER() OVER (ORDER BY id) AS n FROM products",
            "id",
            "it uses a window function (ROW_NUMBER)",
            true,
        ),
        ("SELECT LOWER(sku) AS sku FROM products", "sku", "computed", true),
        (
            "SELECT id FROM (SELECT id FROM products) AS t",
            "id",
            "derived table",
            true,
        ),
        (
            "WITH t AS (SELECT id FROM products) SELECT id FROM t",
            "id",
            "WITH",
            true,
        ),
        (
            "SELECT id FROM products p JOIN categories c ON c.id = p.category_id",
            "id",
            "qualified",
            true,
        ),
    ];
    let mut config = String::from(
        "[mysql]\nurl = \"mysql://root@127.0.0.1:1/shop\"\n[redis]\nurl = \"redis://127.0.0.1:1\"\n\
         [binlog]\nserver_id = 7\nderive_rules = true\n",
    );
    for (index, (query, placeholder, _, _)) in shapes.iter().enumerate() {
        config.push_str(&format!(
            "\n[[warm]]\nname = \"shape{index}\"\nschedule = \"every 1h\"\nquery = \"{query}\"\n\
             key = \"shape{index}:{{{placeholder}}}\"\nttl = \"1h\"\n"
        ));
    }
    let path = dir.path().join("jobs.toml");
    std::fs::write(&path, config).unwrap();
    let (code, stdout, stderr) = common::cli_output(&["check"], &path);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    // Each job's section: from its line to the next job's.
    for (index, (query, _, reason, coverable)) in shapes.iter().enumerate() {
        let start = stdout
            .find(&format!("  shape{index}: TTL only: "))
            .unwrap_or_else(|| panic!("{query}: not named TTL only:\n{stdout}"));
        let section = &stdout[start..];
        let section = &section[..section[2..].find("\n  shape").map_or(section.len(), |end| end + 2)];
        assert!(section.contains(reason), "{query}: {section}");
        let suggested = section.contains(&format!("warm = [\"shape{index}\"]"));
        assert_eq!(suggested, *coverable, "{query}: {section}");
    }

    // The subquery job alone with the rules check suggests pasted in: covered, so check --strict passes.
    let start = stdout.find("  shape3: TTL only").unwrap();
    let section = &stdout[start..stdout[start + 2..].find("\n  shape").unwrap() + start + 2];
    let suggested: String = section
        .lines()
        .filter_map(|line| line.strip_prefix("        "))
        .map(|line| format!("{line}\n"))
        .collect();
    let (query, ..) = shapes[3];
    std::fs::write(
        &path,
        format!(
            "[mysql]\nurl = \"mysql://root@127.0.0.1:1/shop\"\n[redis]\nurl = \"redis://127.0.0.1:1\"\n\
             [binlog]\nserver_id = 7\n\n[[warm]]\nname = \"shape3\"\nschedule = \"every 1h\"\nquery = \"{query}\"\n\
             key = \"shape3:{{id}}\"\nttl = \"1h\"\n\n{suggested}"
        ),
    )
    .unwrap();
    let (code, stdout, stderr) = common::cli_output(&["check", "--strict"], &path);
    assert_eq!(code, Some(0), "{suggested}\n{stdout}{stderr}");
    assert!(stdout.contains("explicit rules cover every table"), "{stdout}");
}
