//! Derived rules under random writes on MariaDB and MySQL, the same writes without them, a top-N and a fan-out past its
//! limit.

use super::*;

#[tokio::test]
async fn with_only_warm_jobs_derived_rules_keep_every_key_right_under_random_writes() {
    let _binlog = common::binlog_shared();
    derived_rules_keep_every_key_right(TestEnv::new().await).await;
}

#[tokio::test]
async fn without_derived_rules_the_same_writes_leave_stale_keys() {
    // The test above can fail: with derive_rules off nothing follows the writes.
    let _binlog = common::binlog_shared();
    let env = TestEnv::new().await;
    env.sql(SCHEMA).await;
    env.sql("INSERT INTO products VALUES (1, 1, 'one', 'active', 20.00, NULL), (2, 1, 'two', 'active', 5.00, NULL)")
        .await;
    let path = env.write_file(
        "jobs.toml",
        &daemon_config(&env).replace("derive_rules = true", "derive_rules = false"),
    );
    let daemon = Daemon::start(&env, &path, &[], &[]);
    wait_for_admin(&env).await;
    common::first_run(&env, &daemon, "top").await;
    env.sql("UPDATE products SET status = 'hidden' WHERE id = 1").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let differences = differences(&env).await;
    assert!(
        differences.iter().any(|d| d.starts_with("active:1:")),
        "{differences:?}"
    );
}

#[tokio::test]
async fn a_row_pushed_out_of_a_top_n_by_another_loses_its_key() {
    let _binlog = common::binlog_shared();
    let env = TestEnv::new().await;
    env.sql(
        "CREATE TABLE scores (id INT PRIMARY KEY, points INT NOT NULL);
         INSERT INTO scores VALUES (1, 10), (2, 9), (3, 1)",
    )
    .await;
    let jobs = |prefix: &str| {
        format!(
            "\n[[warm]]\nname = \"leaders\"\nschedule = \"0 0 0 1 1 *\"\nrun_on_start = true\n\
             query = \"SELECT id, points FROM scores ORDER BY points DESC LIMIT 2\"\n\
             key = \"{prefix}leader:{{id}}\"\nttl = \"1h\"\n"
        )
    };
    let daemon = common::following(&env, &daemon_config_of(&env, jobs)).await;
    let leader = |id: u32| {
        let key = format!("{}leader:{id}", env.prefix);
        let env = &env;
        async move { env.get(&key).await }
    };
    let warmed = eventually(Duration::from_secs(20), || async { leader(2).await.map(|_| ()) }).await;
    assert!(warmed.is_some(), "{}", daemon.log());
    // Row 3 passes row 2, which itself did not change: the re-run prunes its key.
    env.sql("UPDATE scores SET points = 20 WHERE id = 3").await;
    let pruned = eventually(Duration::from_secs(20), || async {
        (leader(2).await.is_none() && leader(3).await.is_some()).then_some(())
    })
    .await;
    assert!(pruned.is_some(), "{}", daemon.log());
    assert!(leader(1).await.is_some());
}

#[tokio::test]
async fn a_joined_change_reaching_more_keys_than_max_fanout_re_runs_the_job_instead() {
    let _binlog = common::binlog_shared();
    let env = TestEnv::new().await;
    env.sql(
        "CREATE TABLE brands (id INT PRIMARY KEY, name VARCHAR(40) NOT NULL);
         CREATE TABLE items (id INT PRIMARY KEY, brand_id INT NOT NULL, KEY (brand_id));
         INSERT INTO brands VALUES (1, 'big'), (2, 'small');
         INSERT INTO items VALUES (1, 1), (2, 1), (3, 1), (4, 1), (5, 1), (6, 2), (7, 2)",
    )
    .await;
    // `max_fanout` belongs to [binlog], which daemon_config_of leaves open just before the jobs.
    let jobs = |prefix: &str| {
        let query = "SELECT i.id, b.name AS brand FROM items i JOIN brands b ON b.id = i.brand_id";
        format!(
            "max_fanout = 3\n\n[[warm]]\nname = \"items\"\nschedule = \"0 0 0 1 1 *\"\nrun_on_start = true\n\
             query = \"{query}\"\nrefresh_query = \"{query} WHERE i.id = :id\"\n\
             key = \"{prefix}item:{{id}}\"\nttl = \"1h\"\n"
        )
    };
    let daemon = common::following(&env, &daemon_config_of(&env, jobs)).await;
    let brand = |id: u32| {
        let key = format!("{}item:{id}", env.prefix);
        let env = &env;
        async move { env.get(&key).await.filter(|value| value.contains(r#""brand":"#)) }
    };
    let warmed = eventually(Duration::from_secs(20), || async { brand(7).await }).await;
    assert!(warmed.is_some(), "{}", daemon.log());
    let rewarms = r#"cachewarden_binlog_lookup_rewarms_total{warm_job="items",reason="fanout"}"#;
    let looked_up = r#"cachewarden_binlog_lookup_keys_total{warm_job="items"}"#;

    // Two keys: within max_fanout, looked up and refreshed.
    env.sql("UPDATE brands SET name = 'tiny' WHERE id = 2").await;
    let refreshed = eventually(Duration::from_secs(20), || async {
        let (six, seven) = (brand(6).await?, brand(7).await?);
        (six.contains("tiny") && seven.contains("tiny")).then_some(())
    })
    .await;
    assert!(refreshed.is_some(), "{}", daemon.log());
    assert_eq!(metric(&env, looked_up).await, 2.0);
    assert_eq!(metric(&env, rewarms).await, 0.0);

    // Five keys: more than max_fanout, so the job runs again (and every key still ends right).
    env.sql("UPDATE brands SET name = 'huge' WHERE id = 1").await;
    let rerun = eventually(Duration::from_secs(20), || async {
        for id in 1..=5 {
            brand(id).await?.contains("huge").then_some(())?;
        }
        Some(())
    })
    .await;
    assert!(rerun.is_some(), "{}", daemon.log());
    assert_eq!(metric(&env, rewarms).await, 1.0, "{}", daemon.log());
    assert_eq!(
        metric(&env, looked_up).await,
        2.0,
        "the over-wide lookup's keys are not counted as refreshed"
    );
    assert!(daemon.log().contains("more keys than max_fanout"), "{}", daemon.log());
}
