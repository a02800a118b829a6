"""Redis data shapes: an exact top N kept from the binlog, and a hash's changed fields against a whole-JSON rewrite.

Imported by bench.py, which hands itself in as `h` (its helpers: config, Daemon, metric, wait, mysql, r, flush, ...).

Scenarios:
  top_n        the top 100 of 1,000,000 products by sales (no index on sales) in a sorted set, under a load of single-row
               score updates from two writers (aimed at 5,000/s; the rate reached is reported), most of them among
               2,000 "hot" products whose scores contend for the top. Freshness: a probe row is lifted into the top
               (then dropped again) every 200 ms, and the time from its commit until `ZSCORE` shows it is taken (polled
               every millisecond: the figure's resolution). Three ways to keep the set: cachewarden following the
               binlog (`type = "zset"`, derived rules, buffer 100), cachewarden re-running the job every second
               (`schedule = "every 1s"`, no binlog), and a Python loop re-running the query every second and replacing
               the set in one MULTI. For each: freshness p50/p99/max, MariaDB's CPU per second of load, the daemon's
               (or the loop's) CPU, and how often the set was warmed again.
  hash_update  100,000 rows warmed as hashes and as JSON strings; one column of every row changed; the job run again:
               keys/s for the hash (only the changed field written) and the string (the whole JSON written again), and
               Redis' CPU for each.
"""
import os
import statistics
import subprocess
import sys
import threading
import time

import pymysql

ROWS = 1_000_000
HOT = 2_000
TOP = 100
PROBES = 60
TARGET_RATE = 5_000
LOAD_SECONDS = 12
PREFIX = "bench:top:"
QUERY = "SELECT id, sales FROM tn_products ORDER BY sales DESC, CAST(id AS CHAR) DESC LIMIT 100"
PROBE_BASE = ROWS + 1  # probe rows, outside the hot ones
HASH_ROWS = 100_000


def connect(h):
    """A connection of its own to the bench database (a writer's, the prober's)."""
    host, port = h.MYSQL_BASE.split("@")[1].split(":")
    return pymysql.connect(host=host, port=int(port), user="root", password="", database=h.DATABASE, autocommit=True)


def warm_runs(h):
    """The top job's successful runs so far, by the daemon's /metrics."""
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{h.ADMIN_PORT}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("cachewarden_warm_runs_total{") and 'warm_job="top"' in line and '"success"' in line:
                return float(line.split()[-1])
    return 0.0


def setup(h):
    with h.mysql().cursor() as c:
        c.execute("CREATE TABLE IF NOT EXISTS tn_products (id INT PRIMARY KEY, sales INT NOT NULL)")
        c.execute("SELECT COUNT(*) FROM tn_products")
        if c.fetchone()[0] != ROWS + 1:
            c.execute("TRUNCATE tn_products")
            # The hot ones (1..HOT) near the top, the rest well below; one probe row at 0.
            c.execute("INSERT INTO tn_products SELECT seq, IF(seq <= %s, 900000 + (seq * 7919) %% 100000,"
                      " (seq * 104729) %% 800000) FROM seq_1_to_1000000", (HOT,))
            c.execute("INSERT INTO tn_products VALUES (%s, 0)", (PROBE_BASE,))
        else:
            c.execute("UPDATE tn_products SET sales = 0 WHERE id = %s", (PROBE_BASE,))


def job(schedule="0 0 0 1 1 *"):
    return (f'[[warm]]\nname = "top"\nschedule = "{schedule}"\nrun_on_start = true\nquery = "{QUERY}"\n'
            f'key = "{PREFIX}products"\ntype = "zset"\nmember = "{{id}}"\nscore = "sales"\nbuffer = 100\n'
            f'ttl = "1h"\n')


def writer(h, rate, stop, counts, index):
    """Single-row score updates among the hot products, paced at `rate` per second."""
    conn = connect(h)
    rng = __import__("random").Random(index)
    done = 0
    start = time.monotonic()
    with conn.cursor() as c:
        while not stop.is_set():
            c.execute("UPDATE tn_products SET sales = %s WHERE id = %s",
                      (900000 + rng.randrange(100000), 1 + rng.randrange(HOT)))
            done += 1
            ahead = done / rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
    counts[index] = done
    conn.close()


def probe(h, seconds_limit=5.0):
    """Lifts the probe row into the top, waits until the sorted set shows it, drops it again: the seconds it took."""
    r = h.r()
    conn = connect(h)
    latencies = []
    with conn.cursor() as c:
        for k in range(PROBES):
            score = 2_000_000 + k
            c.execute("UPDATE tn_products SET sales = %s WHERE id = %s", (score, PROBE_BASE))
            committed = time.monotonic()
            seen = None
            while time.monotonic() - committed < seconds_limit:
                if r.zscore(f"{PREFIX}products", str(PROBE_BASE)) == score:
                    seen = time.monotonic()
                    break
                time.sleep(0.001)
            latencies.append((seen or time.monotonic()) - committed)
            c.execute("UPDATE tn_products SET sales = 0 WHERE id = %s", (PROBE_BASE,))
            time.sleep(0.2)
    conn.close()
    return latencies


def under_load(h, keeper_pid):
    """Runs the writers and the probes together; returns the figures (CPU of MariaDB and of `keeper_pid`)."""
    pids = h.servers()
    maria = pids["mariadb"][0]
    maria_before, keeper_before = h.process_cpu(maria), h.process_cpu(keeper_pid)
    stop = threading.Event()
    counts = [0, 0]
    writers = [threading.Thread(target=writer, args=(h, TARGET_RATE / 2, stop, counts, i)) for i in range(2)]
    start = time.monotonic()
    for thread in writers:
        thread.start()
    latencies = probe(h)
    stop.set()
    for thread in writers:
        thread.join()
    seconds = time.monotonic() - start
    maria_cpu = h.process_cpu(maria) - maria_before
    keeper_cpu = h.process_cpu(keeper_pid) - keeper_before
    latencies.sort()
    pct = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000  # noqa: E731
    return {"updates_per_s": sum(counts) / seconds, "fresh_p50_ms": pct(0.5), "fresh_p99_ms": pct(0.99),
            "fresh_max_ms": latencies[-1] * 1000, "mariadb_cpu_per_s": maria_cpu / seconds,
            "keeper_cpu_per_s": keeper_cpu / seconds, "seconds": seconds}


def exact(h):
    """Whether the sorted set's top 100 is the query's, after the load."""
    with h.mysql().cursor() as c:
        c.execute(QUERY)
        want = [(str(row[0]), float(row[1])) for row in c.fetchall()]
    got = [(m.decode(), s) for m, s in h.r().zrevrange(f"{PREFIX}products", 0, TOP - 1, withscores=True)]
    return want == got


def with_binlog(h, run):
    h.flush()
    setup(h)
    cfg = h.config(f'[channel]\nenabled = false\n\n[binlog]\nserver_id = {9800 + run}\ncheckpoint_key = '
                   f'"bench:checkpoint"\nheartbeat = "1s"\non_gap = "none"\nderive_rules = true\n\n{job()}')
    daemon = h.Daemon(cfg)
    h.wait(lambda: h.r().zcard(f"{PREFIX}products") >= TOP, 60)
    h.quiet()
    warms_before = warm_runs(h)
    figures = under_load(h, daemon.process.pid)
    h.wait(lambda: exact(h), 10, 0.05)
    figures["rewarms"] = warm_runs(h) - warms_before
    figures["exact_after"] = exact(h)
    daemon.stop()
    return figures


def every_second(h):
    h.flush()
    setup(h)
    daemon = h.Daemon(h.config(job("every 1s")))
    h.wait(lambda: h.r().zcard(f"{PREFIX}products") >= TOP, 60)
    h.quiet()
    figures = under_load(h, daemon.process.pid)
    daemon.stop()
    return figures


def python_loop(h):
    h.flush()
    setup(h)
    py = os.path.join(sys.prefix, "bin", "python")
    loop = subprocess.Popen([py, os.path.join(h.BASELINES, "top_n_loop.py"), h.MYSQL_BASE, h.REDIS_URL, h.DATABASE,
                             f"{PREFIX}products", QUERY])
    h.wait(lambda: h.r().zcard(f"{PREFIX}products") >= TOP, 60)
    h.quiet()
    figures = under_load(h, loop.pid)
    loop.terminate()
    loop.wait(timeout=30)
    return figures


def top_n(h, runs):
    binlog = [with_binlog(h, run) for run in range(runs)]
    rerun = every_second(h)
    python = python_loop(h)
    h.flush()
    med = lambda field: statistics.median(run[field] for run in binlog)  # noqa: E731
    figures = {field: med(field) for field in binlog[0] if field != "exact_after"}
    figures["exact_after"] = all(run["exact_after"] for run in binlog)
    figures.update({f"rerun_{k}": v for k, v in rerun.items()})
    figures.update({f"python_{k}": v for k, v in python.items()})
    return figures


def hash_setup(h):
    with h.mysql().cursor() as c:
        c.execute("CREATE TABLE IF NOT EXISTS hu_rows (id INT PRIMARY KEY, name VARCHAR(40) NOT NULL, price"
                  " DECIMAL(8,2) NOT NULL, stock INT NOT NULL, note VARCHAR(60) NOT NULL)")
        c.execute("TRUNCATE hu_rows")
        c.execute("INSERT INTO hu_rows SELECT seq, CONCAT('Product ', seq), seq % 1000 + 0.99, seq % 50,"
                  " 'a note of some sixty characters, as rows have' FROM seq_1_to_100000")


def hash_update(h, runs):
    results = {}
    for kind in ("hash", "string"):
        walls, redis_cpu = [], []
        for _ in range(runs):
            h.flush()
            hash_setup(h)
            cfg = h.config(h.warm_job("hu", "SELECT id, name, price, stock, note FROM hu_rows", "bench:hu:",
                                      f'type = "{kind}"'))
            subprocess.run([h.BIN, "run", "--once", "--config", cfg], check=True, capture_output=True)
            with h.mysql().cursor() as c:
                c.execute("UPDATE hu_rows SET stock = stock + 1")
            h.quiet()
            wall, split = h.cpu_split([h.BIN, "run", "--once", "--config", cfg], 1)
            walls.append(wall)
            redis_cpu.append(split["redis"])
        results[f"{kind}_keys_per_s"] = HASH_ROWS / statistics.median(walls)
        results[f"{kind}_redis_cpu_ms"] = statistics.median(redis_cpu) * 1000
    h.flush()
    return results
