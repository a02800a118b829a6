//! Partitioned warm runs (`partitions = K`): three instances run the pieces of a run between them; a kill -9 of an
//! instance holding a piece has that piece run again by another once its claim runs out, and a stop (SIGTERM) gives
//! its claim back as it ends; each run ends with every piece recorded done exactly once and every key written.

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
    // About 3 s a piece (SLEEP per row): the kill lands early in a piece, seen within a poll of its start. The SLEEP
    // is a column, so the run's range read (MIN and MAX of id over the query, which does not select it) skips it.
    let body = format!(
        "[channel]\nenabled = false\n\n[[warm]]\nname = \"{job}\"\nschedule = \"0 0 0 1 1 *\"\n\
         query = \"SELECT id, v, SLEEP(0.015) AS s FROM t\"\nkey = \"{p}t:{{id}}\"\nttl = \"1h\"\n\
         partitions = {PIECES}\n"
    );
    let names = ["a", "b", "c"];
    let (instances, mut daemons) = fleet(&env, &names, &body);
    let admins: Vec<SocketAddr> = instances.iter().map(|(_, admin)| *admin).collect();
    for admin in &admins {
        let up = eventually(Duration::from_secs(20), || async {
            admin::request(*admin, Method::GET, "/readyz")
                .await
                .ok()
                .filter(|r| r.status == 200)
        });
        assert!(up.await.is_some(), "not ready:\n{}", logs(&daemons));
    }

    // A run is asked of the leader; the others join it.
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
    let board_key = format!("{p}leader:pieces:{{{job}}}");
    let mut redis = env.redis().await;
    let mut previous_run = String::new();
    // Two runs: in the first an instance holding a piece is killed (kill -9), in the second one is stopped (SIGTERM).
    for signal in ["KILL", "TERM"] {
        if signal == "TERM" {
            let asked = admin::request(admins[leader], Method::POST, &format!("/jobs/{job}/run"))
                .await
                .unwrap();
            assert_eq!(asked.status, 202, "{}", asked.body);
        }
        let holder = eventually(Duration::from_secs(20), || async {
            let run = board(admins[leader], &job)
                .await
                .filter(|run| run["run"] != previous_run.as_str())?;
            run["pieces"].as_array()?.iter().find_map(|piece| {
                let instance = piece["instance"].as_str()?;
                (piece["state"] == "running" && instance != names[leader])
                    .then(|| (instance.to_string(), piece["piece"].as_u64().unwrap()))
            })
        })
        .await;
        let Some((signalled, piece)) = holder else {
            panic!("{signal}: no other instance took a piece:\n{}", logs(&daemons));
        };
        let index = names.iter().position(|name| *name == signalled).unwrap();
        daemons[index].signal(signal);
        if signal == "TERM" {
            // A stop gives its claim back as it ends: the piece is no longer held by it (a killed instance's claim
            // stays until it runs out).
            let deadline = Instant::now() + Duration::from_secs(30);
            while daemons[index].is_running() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert!(
                !daemons[index].is_running(),
                "{signalled} did not stop:\n{}",
                logs(&daemons)
            );
            let claim: Option<String> = redis::cmd("HGET")
                .arg(&board_key)
                .arg(format!("claim:{piece}"))
                .query_async(&mut redis)
                .await
                .unwrap();
            assert_ne!(
                claim.as_deref(),
                Some(signalled.as_str()),
                "the stopped instance kept its claim"
            );
        }

        // The run ends (the killed one's piece claimed again once its 10 s claim ran out), reported by the leader.
        let finished = eventually(Duration::from_secs(90), || async {
            let run = board(admins[leader], &job).await?;
            (run["state"] == "done" && run["run"] != previous_run.as_str()).then_some(run)
        })
        .await;
        let Some(run) = finished else {
            panic!("{signal}: the run did not finish:\n{}", logs(&daemons));
        };
        previous_run = run["run"].as_str().unwrap().to_string();
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
        let again = &pieces[piece as usize];
        assert!(
            again["attempts"].as_u64().unwrap() >= 2 && again["instance"] != signalled.as_str(),
            "{signal}: the signalled instance's piece was not run again by another: {run:#}"
        );
        let reported = eventually(Duration::from_secs(10), || async {
            let body = admin::request(admins[leader], Method::GET, "/jobs").await.ok()?.body;
            let jobs: serde_json::Value = serde_json::from_str(&body).ok()?;
            let entry = jobs
                .as_array()?
                .iter()
                .find(|entry| entry["name"] == job.as_str())?
                .clone();
            let wanted = if signal == "KILL" { 1 } else { 2 };
            (entry["runs"]["succeeded"] == wanted).then_some(entry["last_run"].clone())
        })
        .await;
        let last = reported.unwrap_or_else(|| panic!("the leader did not report the run:\n{}", logs(&daemons)));
        assert_eq!(last["keys_written"], u64::from(ROWS), "{last:#}");
        if signal == "KILL" {
            // The killed instance comes back, and takes pieces of the next run again.
            daemons[index] = Daemon::start(&env, &instances[index].0, &[], &[]);
            let up = eventually(Duration::from_secs(20), || async {
                admin::request(admins[index], Method::GET, "/readyz")
                    .await
                    .ok()
                    .filter(|r| r.status == 200)
            });
            assert!(up.await.is_some(), "{signalled} did not come back:\n{}", logs(&daemons));
        }
    }

    // Every key holds its row.
    for id in 1..=ROWS {
        let value: Option<String> = redis::cmd("GET")
            .arg(format!("{p}t:{id}"))
            .query_async(&mut redis)
            .await
            .unwrap();
        assert_eq!(
            value,
            Some(format!(r#"{{"id":{id},"v":{},"s":0}}"#, id * 7)),
            "key {id}"
        );
    }
    let _: () = redis::cmd("DEL").arg(&board_key).query_async(&mut redis).await.unwrap();
}
