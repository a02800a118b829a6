"""Work sharing under [ha] with several binlog sources: how long a source goes unfollowed when the instance holding
it is killed (kill -9) or stopped (SIGTERM), and how long a change committed just after the kill waits for its key.

Two instances, two sources: the bench's MariaDB (`main`, no rules used) and a MariaDB of the bench's own (`own`,
a projection rule). Each instance holds one source; the holder of `own` is killed, a row is inserted at once, and the
other instance takes `own` over from its checkpoint. No Python baseline: plain scripts have no takeover.
"""
import signal
import statistics
import subprocess
import os
import time
import urllib.request

import pymysql


def following(port, source):
    """Whether the instance whose admin endpoint is on `port` follows `source`."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as response:
            for line in response.read().decode().splitlines():
                if line.startswith(f'cachewarden_binlog_following{{source="{source}"}} '):
                    return float(line.split()[-1]) == 1.0
    except OSError:
        pass
    return False


def source_takeover(b, kills=5):
    """p50 and max over `kills` kills of each kind, with lease_ttl 10 s (the default) and 3 s: seconds from the signal
    to the other instance following the source, and from the insert to its key."""
    process, base, work = b.own_mariadb([])
    port = int(base.rsplit(":", 1)[1])
    results = {}
    ports = (b.ADMIN_PORT + 20, b.ADMIN_PORT + 21)
    try:
        db = pymysql.connect(host="127.0.0.1", port=port, user="root", password="", autocommit=True)
        with db.cursor() as c:
            c.execute("CREATE DATABASE so")
            c.execute("CREATE TABLE so.orders (id INT PRIMARY KEY, v INT)")
        row = 0
        for ttl in ("10s", "3s"):
            b.flush()
            paths = []
            for name, admin in zip("ab", ports):
                body = (f'[channel]\nenabled = false\n\n'
                        f'[[binlog]]\nname = "main"\ncheckpoint_key = "bench:cp:main"\nheartbeat = "1s"\n\n'
                        f'[[binlog]]\nname = "own"\nurl = "{base}/so"\ncheckpoint_key = "bench:cp:own"\nheartbeat = "1s"\n\n'
                        f'[[on_change]]\nsource = "own"\ntable = "so.orders"\n'
                        f'project = {{ key = "bench:o:{{id}}", columns = ["id", "v"], ttl = "10m" }}\n\n'
                        f'[ha]\nenabled = true\nlease_ttl = "{ttl}"\nkey = "bench:sharing"\ninstance = "{name}"\n')
                path = b.rewrite(b.config(body), f'listen = "127.0.0.1:{b.ADMIN_PORT}"', f'listen = "127.0.0.1:{admin}"')
                paths.append(path)

            def start(path):
                return subprocess.Popen([b.BIN, "run", "--config", path], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "warn"})

            processes = [start(path) for path in paths]

            def spread():
                return all(sum(following(p, source) for p in ports) == 1 for source in ("main", "own")) \
                    and all(sum(following(p, source) for source in ("main", "own")) == 1 for p in ports)

            for name, sig in (("kill9", signal.SIGKILL), ("sigterm", signal.SIGTERM)):
                follow, key = [], []
                for _ in range(kills):
                    if not b.wait(spread, 60, 0.02):
                        raise RuntimeError("the two sources were not spread over the two instances")
                    holder = 0 if following(ports[0], "own") else 1
                    other = ports[1 - holder]
                    signalled = time.monotonic()
                    processes[holder].send_signal(sig)
                    row += 1
                    with db.cursor() as c:
                        c.execute("INSERT INTO so.orders VALUES (%s, 1)", (row,))
                    committed = time.monotonic()
                    took = b.wait(lambda: following(other, "own"), 60, 0.005)
                    follow.append(time.monotonic() - signalled if took else float("inf"))
                    arrived = b.wait(lambda: b.r().exists(f"bench:o:{row}"), 60, 0.005)
                    key.append(time.monotonic() - committed if arrived else float("inf"))
                    processes[holder].wait(timeout=30)
                    processes[holder] = start(paths[holder])
                results[f"{name}_{ttl}_followed_p50_s"] = statistics.median(follow)
                results[f"{name}_{ttl}_followed_max_s"] = max(follow)
                results[f"{name}_{ttl}_key_p50_s"] = statistics.median(key)
                results[f"{name}_{ttl}_key_max_s"] = max(key)
            for p in processes:
                p.terminate()
                p.wait(timeout=30)
        b.flush()
        return results
    finally:
        process.terminate()
        process.wait(timeout=60)
        import shutil
        shutil.rmtree(work, ignore_errors=True)


def jobs_entry(port, job):
    """The `/jobs` entry of `job` on the instance whose admin endpoint is on `port` (None when it does not answer)."""
    import json
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/jobs", timeout=2) as response:
            return next((entry for entry in json.load(response) if entry["name"] == job), None)
    except OSError:
        return None


def partitioned_warm(b, pieces=6):
    """The 1M-row warm (the warm_1m job) run by 1, 2 and 3 instances under [ha] sharing its pieces (partitions =
    `pieces`), and by one instance unpartitioned: seconds from the trigger to the leader reporting the run, keys/s,
    and the keys each instance wrote. On 2 cores the instances share the same CPUs, so this shows the split and the
    coordination's cost, not a speed-up."""
    import json
    results = {}
    ports = [b.ADMIN_PORT + 30 + i for i in range(3)]
    for label, count, extra in (("whole_1", 1, ""), ("pieces_1", 1, f"partitions = {pieces}\n"),
                                ("pieces_2", 2, f"partitions = {pieces}\n"), ("pieces_3", 3, f"partitions = {pieces}\n")):
        b.flush()
        job = b.warm_job("million", b.MILLION_QUERY, "bench:m:", extra)
        processes = []
        try:
            for name, admin in zip("abc"[:count], ports):
                body = f'{job}\n[channel]\nenabled = false\n\n[ha]\nenabled = true\nkey = "bench:parts"\ninstance = "{name}"\n'
                path = b.rewrite(b.config(body), f'listen = "127.0.0.1:{b.ADMIN_PORT}"', f'listen = "127.0.0.1:{admin}"')
                processes.append(subprocess.Popen([b.BIN, "run", "--config", path], stdout=subprocess.DEVNULL,
                                                  stderr=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "warn"}))
            live = ports[:count]
            if not b.wait(lambda: all(jobs_entry(p, "million") is not None for p in live), 60, 0.05):
                raise RuntimeError("the instances did not start")
            leader, started = None, None
            deadline = time.monotonic() + 30
            while leader is None and time.monotonic() < deadline:
                for p in live:
                    request = urllib.request.Request(f"http://127.0.0.1:{p}/jobs/million/run", method="POST")
                    try:
                        with urllib.request.urlopen(request, timeout=2):
                            leader, started = p, time.monotonic()
                            break
                    except OSError:
                        pass
                time.sleep(0.05)
            if leader is None:
                raise RuntimeError("no instance took the run")

            def reported():
                entry = jobs_entry(leader, "million")
                return entry is not None and (entry.get("last_run") or {}).get("outcome") == "success"

            if not b.wait(reported, 600, 0.02):
                raise RuntimeError(f"{label}: the run did not finish")
            seconds = time.monotonic() - started
            written = sum(1 for _ in b.r().scan_iter("bench:m:*", count=10_000))
            assert written == 1_000_000, f"{label}: {written} keys"
            results[f"{label}_s"] = seconds
            results[f"{label}_keys_per_s"] = 1_000_000 / seconds
            run = (jobs_entry(leader, "million").get("partitions") or {}).get("latest_run")
            split = {}
            for piece in (run or {}).get("pieces", []):
                split[piece["instance"]] = split.get(piece["instance"], 0) + piece["keys"]
            results[f"{label}_split"] = " / ".join(f"{who} {keys // 1000}k" for who, keys in sorted(split.items())) or "-"
        finally:
            for p in processes:
                p.terminate()
            for p in processes:
                p.wait(timeout=60)
    b.r().delete("bench:parts:pieces:{million}")
    b.flush()
    return results
