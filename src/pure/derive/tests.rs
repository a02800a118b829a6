use super::analyze::{Shape, analyze, parse_condition};
use super::rule::renamed;
use super::*;
use crate::pure::model::RowImage;
use crate::pure::predicate::Truth;

const SETTINGS: Settings = Settings {
    debounce: Duration::from_secs(30),
    max_fanout: 100,
};

/// Every job's derived rules are made with [`SETTINGS`].
fn settings(_: &WarmJob) -> Settings {
    SETTINGS
}

fn job(name: &str, query: &str, key: &str, refresh: bool) -> WarmJob {
    let mut job = WarmJob::example(name, key);
    job.query = query.into();
    if refresh {
        job.refresh_query = Some(format!("{query} AND id = :id"));
    }
    job
}

fn image(pairs: &[(&str, Option<&str>)]) -> RowImage {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
        .collect()
}

fn key(template: &str) -> KeyTemplate {
    KeyTemplate::parse(template).unwrap()
}

#[test]
fn a_one_table_query_keys_its_rows_and_filters_them() {
    let analysis = analyze(
        "SELECT id, name FROM products WHERE status = 'active' AND price > 10",
        "shop",
        &key("product:{id}"),
    );
    assert_eq!(analysis.tables.len(), 1);
    assert_eq!(analysis.tables[0].qualified(), "shop.products");
    let Shape::Rows {
        driving,
        key_columns,
        filter,
    } = analysis.shape
    else {
        panic!("{:?}", analysis.shape)
    };
    assert_eq!(driving, 0);
    assert_eq!(key_columns, [("id".to_string(), "id".to_string())]);
    let filter = filter.unwrap();
    let row = |status, price| image(&[("status", Some(status)), ("price", Some(price))]);
    assert_eq!(filter.eval(&row("active", "12.00")), Truth::True);
    assert_eq!(filter.eval(&row("active", "9.99")), Truth::False);
    assert_eq!(filter.eval(&row("hidden", "12.00")), Truth::False);
}

#[test]
fn aliases_databases_and_renamed_key_columns_resolve_to_their_table() {
    let analysis = analyze(
        "SELECT p.id AS pid, c.name AS category FROM catalog.products AS p JOIN categories c ON c.id = p.category_id \
         WHERE p.visible = 1",
        "shop",
        &key("product:{pid}"),
    );
    let names: Vec<String> = analysis.tables.iter().map(|t| t.qualified()).collect();
    assert_eq!(names, ["catalog.products", "shop.categories"]);
    assert_eq!(
        analysis.tables[1].links,
        [("id".to_string(), "category_id".to_string())]
    );
    let Shape::Rows { key_columns, .. } = &analysis.shape else {
        panic!("{:?}", analysis.shape)
    };
    assert_eq!(key_columns, &[("pid".to_string(), "id".to_string())]);
    assert_eq!(renamed(&key("product:{pid}"), key_columns).as_str(), "product:{id}");
}

#[test]
fn what_the_binlog_cannot_follow_is_ttl_only_with_the_reason() {
    let cases = [
        ("SELECT id FROM sessions WHERE seen > NOW() - INTERVAL 1 HOUR", "NOW()"),
        ("SELECT id FROM products ORDER BY RAND()", "RAND()"),
        (
            "SELECT id FROM products WHERE id IN (SELECT product_id FROM hits)",
            "subquery",
        ),
        ("SELECT id FROM a UNION SELECT id FROM b", "UNION"),
        (
            "SELECT id, ROW_NUMBER() OVER (ORDER BY id) AS n FROM products",
            "window function",
        ),
        ("SELECT id FROM products WHERE owner = @me", "variable"),
        ("SELECT LOWER(sku) AS sku FROM products", "computed"),
        ("SELECT id FROM (SELECT id FROM products) AS t", "derived table"),
        ("WITH t AS (SELECT id FROM products) SELECT id FROM t", "WITH"),
        (
            "SELECT id FROM products p JOIN categories c ON c.id = p.category_id",
            "qualified",
        ),
        ("SELEKT nonsense", "parser"),
    ];
    for (sql, reason) in cases {
        let template = if sql.contains("sku") {
            "product:{sku}"
        } else {
            "product:{id}"
        };
        let analysis = analyze(sql, "shop", &key(template));
        match &analysis.shape {
            Shape::TtlOnly(why) => assert!(why.contains(reason), "{sql}: {why}"),
            other => panic!("{sql}: {other:?}"),
        }
    }
}

#[test]
fn aggregates_groups_and_limits_are_whole_results() {
    for (sql, template, why) in [
        ("SELECT COUNT(*) AS n FROM orders", "orders:count", "one key"),
        (
            "SELECT category_id, COUNT(*) AS n FROM products GROUP BY category_id",
            "cat:{category_id}",
            "aggregates",
        ),
        (
            "SELECT p.category_id, COUNT(*) AS n FROM products p GROUP BY p.category_id, p.brand",
            "cat:{category_id}",
            "aggregates",
        ),
        (
            "SELECT category_id, SUM(sales) AS s FROM products GROUP BY category_id ORDER BY s DESC LIMIT 3",
            "cat:{category_id}",
            "aggregates",
        ),
        (
            "SELECT DISTINCT category_id FROM products",
            "cat:{category_id}",
            "DISTINCT",
        ),
        (
            "SELECT id, sales FROM products ORDER BY sales DESC LIMIT 10",
            "top:{id}",
            "LIMIT",
        ),
    ] {
        let analysis = analyze(sql, "shop", &key(template));
        let Shape::Whole {
            why: found,
            keyed_by,
            per_key,
        } = &analysis.shape
        else {
            panic!("{sql}: {:?}", analysis.shape)
        };
        assert!(found.contains(why), "{sql}: {found}");
        assert_eq!(keyed_by.is_some(), template.contains('{'), "{sql}");
        // One group per key only when grouped by exactly the key's columns, without a LIMIT.
        assert_eq!(*per_key, sql.ends_with("GROUP BY category_id"), "{sql}");
    }
}

#[test]
fn coverage_names_explicit_derived_and_uncovered_tables() {
    let jobs = vec![
        job(
            "products",
            "SELECT p.id, c.name AS category FROM products p JOIN categories c ON c.id = p.category_id WHERE p.id > 0",
            "product:{id}",
            true,
        ),
        job("stats", "SELECT COUNT(*) AS n FROM orders", "stats", false),
        job("recent", "SELECT id FROM orders WHERE at > NOW()", "recent:{id}", false),
    ];
    let explicit = vec![ChangeRule {
        database: "shop".into(),
        table: "orders".into(),
        delete: vec![],
        refresh: vec![],
        warm: vec!["stats".into()],
        debounce: Duration::from_secs(5),
        when_changed: vec![],
        project: None,
        filter: None,
        source: None,
        derived_from: None,
        lookup: None,
        events: crate::pure::model::RowEvents::ALL,
        members: None,
    }];
    let coverage = cover(
        &jobs,
        &explicit,
        &|_| "shop".to_string(),
        &settings,
        &Default::default(),
    );
    let products = &coverage[0];
    assert!(matches!(products.tables[0].how, Coverage::Derived(_)), "{products:?}");
    assert!(
        matches!(&products.tables[1].how, Coverage::Derived(what) if what.contains("c.id = p.category_id")
            && what.contains("only changes to name, id")),
        "{products:?}"
    );
    assert!(products.is_covered());
    assert_eq!(products.derived.len(), 2);
    let lookup = products.derived[1]
        .lookup
        .as_ref()
        .expect("the joined table's rule looks keys up");
    assert_eq!(lookup.links, [("id".to_string(), "category_id".to_string())]);
    assert_eq!(
        (lookup.table.as_str(), lookup.key.as_str()),
        ("products", "product:{id}")
    );
    assert!(lookup.refresh, "the refresh query applies the same filter");
    assert_eq!(products.derived[1].when_changed, ["name", "id"]);
    assert_eq!(products.derived[0].refresh[0].as_str(), "product:{id}");
    let filter = products.derived[0].filter.as_ref().unwrap();
    assert!(
        filter.read_decides,
        "the refresh query is the query AND id = :id: {filter:?}"
    );
    let stats = &coverage[1];
    assert_eq!(stats.tables[0].how, Coverage::Explicit(vec![0]));
    assert!(stats.derived.is_empty(), "an explicit rule wins");
    assert!(stats.is_covered());
    let recent = &coverage[2];
    assert!(recent.ttl_only.as_deref().unwrap().contains("NOW()"));
    assert!(!recent.is_covered());
}

#[test]
fn a_table_joined_through_another_re_runs_the_job() {
    let jobs = vec![job(
        "p",
        "SELECT p.id, r.name FROM products p JOIN categories c ON c.id = p.category_id JOIN regions r ON r.id = c.region_id",
        "product:{id}",
        false,
    )];
    let coverage = cover(&jobs, &[], &|_| "shop".to_string(), &settings, &Default::default());
    assert!(
        matches!(coverage[0].tables[1].how, Coverage::Derived(_)),
        "{coverage:?}"
    );
    assert!(
        matches!(&coverage[0].tables[2].how, Coverage::Derived(what)
            if what.contains("through another table") && what.contains("re-runs the job")),
        "{coverage:?}"
    );
    let regions = &coverage[0].derived[2];
    assert_eq!(
        (regions.table.as_str(), regions.warm.as_slice()),
        ("regions", ["p".to_string()].as_slice())
    );
    assert_eq!(
        regions.when_changed,
        ["name", "id"],
        "only the columns the query reads of it"
    );
    let lookup = coverage[0].derived[1].lookup.as_ref().unwrap();
    assert!(!lookup.refresh, "no refresh query: the keys found are deleted");
    // Of categories the query reads only the join columns: a rename there changes no key.
    assert_eq!(coverage[0].derived[1].when_changed, ["id", "region_id"]);
}

#[test]
fn only_jobs_that_derive_rules_add_them() {
    let mut jobs = vec![
        job("a", "SELECT id FROM t1", "a:{id}", false),
        job("b", "SELECT id FROM t2", "b:{id}", false),
    ];
    jobs[1].derive_rules = true;
    let coverage = cover(&jobs, &[], &|_| "db".to_string(), &settings, &Default::default());
    let rules = effective_rules(&[], &coverage, &jobs);
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].table, "t2");
    assert_eq!(rules[0].delete[0].as_str(), "b:{id}");
    assert_eq!(rules[0].derived_from.as_deref(), Some("b"));
}

#[test]
fn a_cascading_foreign_key_gets_a_rule_on_its_parent_for_the_events_that_cascade() {
    use super::schema::{Action, ForeignKey, Schema};
    let schema = Schema {
        foreign_keys: vec![ForeignKey {
            name: "fk_cat".into(),
            database: "shop".into(),
            table: "products".into(),
            columns: vec!["category_id".into()],
            parent_database: "shop".into(),
            parent_table: "categories".into(),
            parent_columns: vec!["id".into()],
            on_delete: Action::SetNull,
            on_update: Action::Restrict,
        }],
        read: true,
        ..Default::default()
    };
    let jobs = vec![job("p", "SELECT id, category_id FROM products", "p:{id}", true)];
    let coverage = cover(&jobs, &[], &|_| "shop".to_string(), &settings, &schema);
    let rule = coverage[0]
        .derived
        .iter()
        .find(|rule| rule.table == "categories")
        .expect("a rule on the parent");
    assert_eq!(rule.warm, ["p"]);
    assert_eq!(
        rule.events,
        crate::pure::model::RowEvents {
            insert: false,
            update: false,
            delete: true
        }
    );
    let categories = coverage[0]
        .tables
        .iter()
        .find(|t| t.table == "shop.categories")
        .unwrap();
    assert!(
        matches!(&categories.how, Coverage::Derived(what) if what.contains("shop.products.fk_cat ON DELETE SET NULL")),
        "{categories:?}"
    );
    // An explicit rule on the parent for the job wins; offline (no schema) nothing is derived there.
    let explicit = vec![ChangeRule {
        source: None,
        derived_from: None,
        ..rule.clone()
    }];
    let coverage = cover(&jobs, &explicit, &|_| "shop".to_string(), &settings, &schema);
    assert!(coverage[0].derived.iter().all(|rule| rule.table != "categories"));
    let coverage = cover(&jobs, &[], &|_| "shop".to_string(), &settings, &Default::default());
    assert!(coverage[0].tables.iter().all(|t| t.table != "shop.categories"));
}

#[test]
fn key_columns_that_are_no_unique_key_re_run_the_job_and_groups_with_a_refresh_path_refresh() {
    let schema = super::schema::Schema {
        unique_keys: vec![("shop".into(), "products".into(), vec!["id".into()])],
        read: true,
        ..Default::default()
    };
    let jobs = vec![
        job("by_id", "SELECT id, name FROM products", "p:{id}", true),
        job("by_name", "SELECT name, id FROM products", "n:{name}", false),
        job(
            "groups",
            "SELECT category_id, COUNT(*) AS n FROM products GROUP BY category_id",
            "g:{category_id}",
            true,
        ),
    ];
    let coverage = cover(&jobs, &[], &|_| "shop".to_string(), &settings, &schema);
    assert_eq!(coverage[0].derived[0].refresh[0].as_str(), "p:{id}");
    let by_name = &coverage[1].derived[0];
    assert_eq!(
        (by_name.delete[0].as_str(), by_name.warm.as_slice()),
        ("n:{name}", ["by_name".to_string()].as_slice())
    );
    let groups = &coverage[2].derived[0];
    assert_eq!(groups.refresh[0].as_str(), "g:{category_id}");
    assert!(
        groups.warm.is_empty(),
        "one group's key is read, the job does not re-run"
    );
    // Offline the key is taken as unique.
    let coverage = cover(&jobs, &[], &|_| "shop".to_string(), &settings, &Default::default());
    assert!(coverage[1].derived[0].warm.is_empty());
}

#[test]
fn a_join_on_columns_no_unique_key_of_the_joined_table_is_one_to_many_and_re_runs_the_job() {
    let schema = super::schema::Schema {
        unique_keys: vec![
            ("shop".into(), "products".into(), vec!["id".into()]),
            ("shop".into(), "categories".into(), vec!["id".into()]),
        ],
        read: true,
        ..Default::default()
    };
    let jobs = vec![
        // n:1: each product joins one category.
        job(
            "named",
            "SELECT p.id, c.name FROM products p JOIN categories c ON c.id = p.category_id",
            "p:{id}",
            false,
        ),
        // 1:n: a category's key is written once per product of it.
        job(
            "fanned",
            "SELECT c.id, p.name FROM categories c JOIN products p ON p.category_id = c.id",
            "c:{id}",
            false,
        ),
    ];
    let coverage = cover(&jobs, &[], &|_| "shop".to_string(), &settings, &schema);
    assert!(
        coverage[0].derived.iter().all(|rule| rule.warm.is_empty()),
        "{:?}",
        coverage[0].derived
    );
    let fanned: Vec<&ChangeRule> = coverage[1].derived.iter().collect();
    assert!(
        fanned.iter().all(|rule| rule.warm == ["fanned".to_string()]),
        "{fanned:?}"
    );
    let (report, _) = super::report::coverage(&coverage, &jobs, true);
    assert!(
        report.contains("it joins shop.products on category_id, which is not a primary or unique key of it"),
        "{report}"
    );
}

#[test]
fn a_rule_condition_parses_into_a_filter_or_says_why_not() {
    let filter = parse_condition("status IN ('a', 'b') AND deleted_at IS NULL", "shop", "products").unwrap();
    assert_eq!(
        filter.eval(&image(&[("status", Some("a")), ("deleted_at", None)])),
        Truth::True
    );
    assert!(
        parse_condition("LOWER(status) = 'a'", "shop", "products")
            .unwrap()
            .has_unknown()
    );
    assert!(
        parse_condition("at > NOW()", "shop", "products")
            .unwrap_err()
            .contains("NOW()")
    );
    assert!(parse_condition("status = 'a' OR", "shop", "products").is_err());
}

#[test]
fn a_filter_prints_as_sql_that_parses_back_into_it() {
    let analysis = analyze(
        "SELECT p.id FROM products p JOIN categories c ON c.id = p.category_id \
         WHERE (p.status IN ('a', 'it''s') OR p.price BETWEEN -1 AND 2.5) AND p.name NOT LIKE 'x\\_%' \
         AND p.deleted_at IS NULL AND c.visible = 1 AND NOT p.hidden",
        "shop",
        &key("product:{id}"),
    );
    let Shape::Rows {
        filter: Some(filter), ..
    } = analysis.shape
    else {
        panic!("{:?}", analysis.shape)
    };
    let text = filter.to_string();
    let parsed = parse_condition(&text, "shop", "products").unwrap();
    assert_eq!(parsed, filter);
    assert!(
        !text.contains("c."),
        "the joined table's parts are left to its own rules: {text}"
    );
    let row = image(&[
        ("status", Some("it's")),
        ("price", Some("9")),
        ("name", Some("x_1")),
        ("deleted_at", None),
        ("hidden", Some("0")),
    ]);
    assert_eq!(filter.eval(&row), Truth::False, "{text}");
    assert_eq!(parsed.eval(&row), Truth::False, "{text}");
}

#[test]
fn a_stored_refresh_query_with_question_marks_is_read_too() {
    let q = "SELECT p.id, c.name AS category FROM products p JOIN categories c ON c.id = p.category_id WHERE p.status = 'a'";
    let main = analyze(q, "shop", &key("product:{id}"));
    let refresh = analyze(&format!("{q} AND p.id = ?"), "shop", &key("product:{id}"));
    assert_eq!(
        main.shape, refresh.shape,
        "the key's own condition is not part of the filter"
    );
}

#[test]
fn a_joins_unqualified_columns_are_placed_by_the_servers_columns() {
    let query = "SELECT id, title FROM products JOIN categories ON category_id = cid";
    let jobs = vec![job("titled", query, "p:{id}", false)];
    // Offline nobody can tell which table `id` is in.
    let offline = cover(&jobs, &[], &|_| "shop".to_string(), &settings, &Default::default());
    assert!(
        offline[0]
            .ttl_only
            .as_deref()
            .is_some_and(|why| why.contains("not qualified")),
        "{:?}",
        offline[0]
    );
    let columns = |table: &str, names: &[&str]| {
        let names = names.iter().map(|name| name.to_string()).collect();
        ("shop".to_string(), table.to_string(), names)
    };
    let schema = super::schema::Schema {
        unique_keys: vec![
            ("shop".into(), "products".into(), vec!["id".into()]),
            ("shop".into(), "categories".into(), vec!["cid".into()]),
        ],
        columns: vec![
            columns("products", &["id", "category_id", "name"]),
            columns("categories", &["cid", "title"]),
        ],
        read: true,
        ..Default::default()
    };
    let coverage = cover(&jobs, &[], &|_| "shop".to_string(), &settings, &schema);
    assert_eq!(coverage[0].ttl_only, None);
    let joined = coverage[0]
        .derived
        .iter()
        .find(|rule| rule.table == "categories")
        .and_then(|rule| rule.lookup.as_ref())
        .expect("a reverse lookup from categories");
    assert_eq!(
        (joined.table.as_str(), joined.links.as_slice()),
        ("products", [("cid".to_string(), "category_id".to_string())].as_slice())
    );
    assert!(
        coverage[0]
            .derived
            .iter()
            .any(|rule| rule.table == "products" && rule.lookup.is_none())
    );
}

/// A zset job of `key`, members `{member}`, scored by `score`.
fn zset(name: &str, query: &str, key: &str, member: &str, score: &str) -> WarmJob {
    let mut job = job(name, query, key, false);
    job.members = Some(std::sync::Arc::new(crate::pure::model::Members {
        kind: crate::pure::model::MemberKind::Zset,
        member: KeyTemplate::parse(member).unwrap(),
        score: Some(score.into()),
        top: None,
    }));
    job
}

#[test]
fn a_sorted_set_follows_its_rows_only_where_each_member_is_one_row_of_its_key() {
    let schema = super::schema::Schema {
        unique_keys: vec![
            ("shop".into(), "products".into(), vec!["id".into()]),
            ("shop".into(), "views".into(), vec!["user_id".into(), "ts".into()]),
        ],
        read: true,
        ..Default::default()
    };
    let jobs = vec![
        zset(
            "ranked",
            "SELECT id, category_id, sales FROM products",
            "top:{category_id}",
            "{id}",
            "sales",
        ),
        // A product viewed twice is two rows of one member: the score column makes the rows unique, not the member.
        zset(
            "recent",
            "SELECT user_id, product_id, ts FROM views",
            "recent:{user_id}",
            "{product_id}",
            "ts",
        ),
    ];
    let coverage = cover(&jobs, &[], &|_| "shop".to_string(), &settings, &schema);
    let members = coverage[0].derived[0].members.as_ref().expect("a member rule");
    assert_eq!(members.key.as_str(), "top:{category_id}");
    assert_eq!(members.score.as_deref(), Some("sales"));
    assert!(
        coverage[1].derived.iter().all(|rule| rule.members.is_none()),
        "{:?}",
        coverage[1].derived
    );
    assert_eq!(coverage[1].derived[0].warm, ["recent"]);
}
