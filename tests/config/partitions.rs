//! `partitions = K` on a warm job: its column (the key's one placeholder unless `partition_by` names another), and
//! the jobs it cannot split, refused with the job and field named.

use super::*;

fn job(fields: &str) -> String {
    format!(
        "{CONNECTIONS}\n[[warm]]\nname = \"products\"\nschedule = \"every 5m\"\nquery = \"SELECT id, category_id, name \
         FROM products\"\nttl = \"1h\"\n{fields}\n"
    )
}

#[test]
fn a_partitioned_job_splits_by_its_keys_one_column_unless_told_another() {
    let config = config::load_str(
        Path::new("jobs.toml"),
        &job("key = \"product:{id}\"\npartitions = 4"),
        HashMap::new(),
    )
    .unwrap_or_else(|error| panic!("{error}"));
    let partitions = config.jobs[0].partitions.clone().expect("partitioned");
    assert_eq!((partitions.count, partitions.column.as_str()), (4, "id"));

    let text = job("key = \"product:{category_id}:{id}\"\npartitions = 3\npartition_by = \"category_id\"");
    let config = config::load_str(Path::new("jobs.toml"), &text, HashMap::new()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.jobs[0].partitions.as_ref().unwrap().column, "category_id");

    // One piece is no split at all.
    let text = job("key = \"product:{id}\"\npartitions = 1");
    let config = config::load_str(Path::new("jobs.toml"), &text, HashMap::new()).unwrap_or_else(|e| panic!("{e}"));
    assert!(config.jobs[0].partitions.is_none());
}

#[test]
fn jobs_that_cannot_be_split_are_refused_with_the_field_named() {
    let cases = [
        (
            "key = \"product:{category_id}:{id}\"\npartitions = 3",
            "partition_by",
            "has several placeholders: name the numeric column",
        ),
        (
            "key = \"product:{id}\"\npartition_by = \"id\"",
            "partition_by",
            "partitions is not",
        ),
        (
            "key = \"product:{id}\"\npartitions = 0",
            "partitions",
            "between 1 and 256",
        ),
        (
            "key = \"product:{id}\"\npartitions = 257",
            "partitions",
            "between 1 and 256",
        ),
        (
            "key = \"all_products\"\npartitions = 2",
            "partitions",
            "holds the whole result",
        ),
        (
            "key = \"category:{category_id}\"\ntype = \"set\"\nmember = \"{id}\"\npartitions = 2",
            "partitions",
            "cannot split a set job",
        ),
    ];
    for (fields, field, expected) in cases {
        let found = problems(&job(fields));
        let problem = find(&found, &format!("warm[0] \"products\".{field}"));
        assert!(problem.message.contains(expected), "{fields}: {problem:?}");
        assert!(problem.line.is_some(), "{fields}: {problem:?}");
    }
}
