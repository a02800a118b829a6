//! Partitioned warm runs (`partitions = K`): three instances run the pieces of one run between them, a kill -9 of
//! an instance holding a piece has that piece run again by another once its claim runs out, and the run ends with
//! every piece recorded done exactly once and every key written.

use super::*;

const ROWS: u32 = 1200;
const PIECES: u32 = 6;

/// The board of `job` as the instance at `admin` shows it on `/jobs`.
async fn board(admin: SocketAddr, job: &str) -> Option<serde_json::Value> {
    let body = admin::request(admin, Method::GET, "/jobs").await.ok()?.body;
    let jobs: serde_json::Value = serde_json::from_str(&body).ok()?;
    let job = jobs.as_array()?.iter().find(|entry| entry["name"] == job)?;
    Some(job["partitions"]["latest_run"].clone()).filter(|run| !run.is_null())
}

#[tokio::test]
async fn three_instances_share_a_partitioned_run_and_a_killed_ones_piece_runs_again_elsewhere() {
    let env = TestEnv::new().await;
    let p = &env.prefix;
    env.sql(&format!(
        "CREATE TABLE t (id INT PRIMARY KEY, v INT NOT NULL);\nINSERT INTO t SELECT seq, seq * 7 FROM seq_1_to_{ROWS}"
    ))
    .await;
    // A unique job name: the board's key is named after the job, under the [ha] key (which carries the prefix).
    let job = format!("part{}", fastrand::u32(..));
    // About 3 s a piece (SLEEP per row): the kill lands early in a piece, seen within a poll of its start.
    let body = format!(
        "[channel]\nenabled = false\n\n[[warm]]\nname = \"{job}\"\nschedule = \"0 0 0 1 1 *\"\n\
         query = \"SELECT id, v FROM t WHERE SLEEP(0.015) = 0\"\nkey = \"{p}t:{{id}}\"\nttl = \"1h\"\n\
         partitions = {PIECES}\n"
    );
    let names = ["a", "b", "c"];
    let instances: Vec<(PathBuf, SocketAddr)> = names.iter().map(|name| instance(&env, name, "1s", &body)).collect();
    let daemons: Vec<Daemon> = instances
        .iter()
        .map(|(config, _)| Daemon::start(&env, config, &[], &[]))
        .collect();
    let admins: Vec<SocketAddr> = instances.iter().map(|(_, admin)| *admin).collect();
    let logs = |daemons: &[Daemon]| daemons.iter().map(Daemon::log).collect::<Vec<_>>().join("\n----\n");
    for admin in &admins {
        let up = eventually(Duration::from_secs(20), || async {
            admin::request(*admin, Method::GET, "/readyz")
                .await
                .ok()
                .filter(|r| r.status == 200)
        });
        assert!(up.await.is_some(), "not ready:\n{}", logs(&daemons));
    }

    // The run starts on the leader (a run is asked of the leader); the others join it. Kill -9 another instance
    // while it holds a piece.
    let leader = eventually(Duration::from_secs(20), || async {
        for (index, admin) in admins.iter().enumerate() {
            let asked = admin::request(*admin, Method::POST, &format!("/jobs/{job}/run"))
                .await
                .ok()?;
            if asked.status == 202 {
                return Some(index);
            }
        }
        None
    })
    .await;
    let leader = leader.unwrap_or_else(|| panic!("no instance took the run:\n{}", logs(&daemons)));
    let holder = eventually(Duration::from_secs(20), || async {
        let run = board(admins[leader], &job).await?;
        run["pieces"].as_array()?.iter().find_map(|piece| {
            let instance = piece["instance"].as_str()?;
            (piece["state"] == "running" && instance != names[leader])
                .then(|| (instance.to_string(), piece["piece"].as_u64()))
        })
    })
    .await;
    let Some((killed, killed_piece)) = holder else {
        panic!("no other instance took a piece:\n{}", logs(&daemons));
    };
    let index = names.iter().position(|name| *name == killed).unwrap();
    daemons[index].signal("KILL");

    // The run ends (the killed one's piece claimed again once its 10 s claim ran out), reported by the leader.
    let finished = eventually(Duration::from_secs(90), || async {
        let run = board(admins[leader], &job).await?;
        (run["state"] == "done").then_some(run)
    })
    .await;
    let Some(run) = finished else {
        panic!("the run did not finish:\n{}", logs(&daemons));
    };
    let pieces = run["pieces"].as_array().unwrap();
    assert_eq!(pieces.len(), PIECES as usize, "{run:#}");
    let mut keys = 0;
    let mut finishers = std::collections::BTreeSet::new();
    for piece in pieces {
        assert_eq!(piece["state"], "done", "{run:#}");
        assert_eq!(
            piece["completions"], 1,
            "each piece recorded done exactly once: {run:#}"
        );
        keys += piece["keys"].as_u64().unwrap();
        finishers.insert(piece["instance"].as_str().unwrap().to_string());
    }
    assert_eq!(
        keys,
        u64::from(ROWS),
        "the pieces' keys add up to the rows, none twice: {run:#}"
    );
    assert!(finishers.len() >= 2, "one instance did all the pieces: {run:#}");
    let again = &pieces[killed_piece.unwrap() as usize];
    assert!(
        again["attempts"].as_u64().unwrap() >= 2 && again["instance"] != killed.as_str(),
        "the killed instance's piece was not run again by another: {run:#}"
    );
    let reported = eventually(Duration::from_secs(10), || async {
        let body = admin::request(admins[leader], Method::GET, "/jobs").await.ok()?.body;
        let jobs: serde_json::Value = serde_json::from_str(&body).ok()?;
        let last = jobs.as_array()?.iter().find(|entry| entry["name"] == job.as_str())?["last_run"].clone();
        (last["outcome"] == "success").then_some(last)
    })
    .await;
    let last = reported.unwrap_or_else(|| panic!("the leader did not report the run:\n{}", logs(&daemons)));
    assert_eq!(last["keys_written"], u64::from(ROWS), "{last:#}");

    // Every key holds its row.
    let mut redis = env.redis().await;
    for id in 1..=ROWS {
        let value: Option<String> = redis::cmd("GET")
            .arg(format!("{p}t:{id}"))
            .query_async(&mut redis)
            .await
            .unwrap();
        assert_eq!(value, Some(format!(r#"{{"id":{id},"v":{}}}"#, id * 7)), "key {id}");
    }
    let _: () = redis::cmd("DEL")
        .arg(format!("{p}leader:pieces:{{{job}}}"))
        .query_async(&mut redis)
        .await
        .unwrap();
}
