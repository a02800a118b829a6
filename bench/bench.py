"""End-to-end benchmarks: cachewarden against plain Python doing the same job, and against Redis' own limit.

Run through scripts/bench (it builds, starts services and prepares the venv). Every scenario runs --runs times
(default 3); the report gives medians and ratios, and is written to docs/BENCHMARKS.md. `--only NAME --against
BINARY` runs one scenario with this build and another in turn (a regression check between two commits).

Scenarios:
  warm-10k   10,000 demo products (~330-byte JSON values): cachewarden run --once vs the seed's per-key SETEX
             loop vs a pipelined Python script; limit: redis-benchmark -P 64 SET with the same value size.
  warm-1m    1,000,000 rows: keys/s and peak RSS (GNU time), cachewarden and the pipelined Python script.
  pubsub     single-key invalidations published in one burst: cachewarden (1,000,000, counted lost) vs the seed's
             subscriber doing one DEL per message (200,000); the daemon's peak RSS after the burst and after 200
             hostile 1 MB messages.
  binlog     delete mode: catch-up over a 100,000-row backlog from a checkpoint, cachewarden vs a
             python-mysql-replication invalidator; and live: a 10,000-row update burst, time from the last commit to
             the last key deleted.
  cluster    the 3-master Redis Cluster from scripts/services (FLUSHALLed: the bench never runs beside the tests):
             warm 1M (protected and not) vs the pipelined Python script on redis-py's RedisCluster, and binlog
             catch-up in delete mode vs the python-mysql-replication invalidator, beside the single-node figures;
             then the same cachewarden figures on a masters-only cluster started for the bench, with cluster_channel.
  cluster_channel  pub/sub deletes (200,000 one-key messages) and one pattern delete over 200,000 keys on the
             masters-only cluster, beside the single node.
  cluster_reshard  2,000 slots migrated during a warm of 1M rows and during a binlog catch-up, on a fresh
             masters-only cluster each: the longest stall beside the same run without a migration, and keys lost.
  idle       the daemon doing nothing for 10 s: RSS and CPU.
  cdc_single_row, cdc_storm   a busy primary: see bench/cdc.py.
  join_storm  a join job's keys kept right by derived rules while its categories are renamed: see bench/derived.py.
  miss_fill  misses filled by the daemon (fill_on_miss) under a 100,000-key burst and one at a time: see
             bench/misses.py.
  top_n, hash_update   an exact top 100 kept from the binlog under score updates, against re-running it every
             second; a hash's changed fields against a whole-JSON rewrite: see bench/shapes.py.
  source_takeover  two instances sharing two binlog sources: a source's holder killed or stopped, the time until the
             other follows it and a change committed meanwhile arrives: see bench/sharing.py.
  partitioned_warm  the 1M-row warm split into 6 pieces (partitions = 6) run by 1, 2 and 3 instances, beside one
             instance running it whole: see bench/sharing.py.
  audit_all  `cachewarden audit --all` over a warmed 100,000-key job, beside warming the same job, and a Python audit
             (streaming cursor, MGET per 1,000, JSON compare); MariaDB CPU per audited key.
"""
import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

import pymysql
import redis
import redis.cluster

import cdc
import derived
import misses
import shapes
import sharing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# CACHEWARDEN_BENCH_BIN measures another build (an older commit, say) with the same scenarios.
BIN = os.environ.get("CACHEWARDEN_BENCH_BIN") or os.path.join(ROOT, "target", "release", "cachewarden")
BASELINES = os.path.join(ROOT, "bench", "baselines")
MYSQL_BASE = os.environ["CACHEWARDEN_TEST_MYSQL_URL"]
REDIS_BASE = os.environ["CACHEWARDEN_TEST_REDIS_URL"]
DATABASE = "cachewarden_bench"
MYSQL_URL = f"{MYSQL_BASE}/{DATABASE}"
REDIS_DB = 9  # a database of the bench's own: flushed between scenarios
REDIS_URL = f"{REDIS_BASE}/{REDIS_DB}"
CLUSTER_URL = os.environ["CACHEWARDEN_TEST_CLUSTER_URL"]
ADMIN_PORT = 19188
LIVE_BURSTS = 5  # per run
JSON_ATTRIBUTES = 'json_columns = ["attributes"]'
PRODUCTS_QUERY = ("SELECT id, sku, name, description, category_id, price, stock, sales, views, attributes, "
                  "updated_at FROM products")


def log(message):
    print(f"bench: {message}", file=sys.stderr, flush=True)


def mysql():
    host_port = MYSQL_BASE.split("@")[1]
    host, port = host_port.split(":")
    return pymysql.connect(host=host, port=int(port), user="root", password="", database=DATABASE, autocommit=True)


def r():
    return redis.Redis.from_url(REDIS_URL)


def data_keys():
    """Keys in the bench database other than cachewarden's own (the stale-set protection's version counter)."""
    return r().dbsize() - r().exists("cachewarden:version", "cachewarden:readers")


def flush():
    r().flushdb()


def config(body, protection=True, cluster=False):
    """A config file for the bench database and Redis db (or the cluster: True for the shared one, or a cluster's
    URL), plus `body`."""
    path = os.path.join(tempfile.mkdtemp(prefix="cwbench"), "jobs.toml")
    cluster_url = cluster if isinstance(cluster, str) else CLUSTER_URL
    redis_url, cluster_line = (cluster_url, "cluster = true\n") if cluster else (REDIS_URL, "")
    with open(path, "w") as f:
        # Plaintext like the Python baselines (PyMySQL does not negotiate TLS by default); the test server offers TLS.
        f.write(f'[mysql]\nurl = "{MYSQL_URL}"\npool_size = 4\nssl_mode = "disabled"\n\n[redis]\nurl = "{redis_url}"\n'
                f'{cluster_line}stale_set_protection = {str(protection).lower()}\n\n'
                f'[admin]\nlisten = "127.0.0.1:{ADMIN_PORT}"\n\n{body}')
    return path


def rewrite(path, old, new, append=""):
    """Replaces `old` with `new` in the config file at `path` (another server, another admin port) and appends
    `append`; returns the path."""
    with open(path) as f:
        text = f.read().replace(old, new)
    with open(path, "w") as f:
        f.write(text + append)
    return path


def warm_job(name, query, prefix, extra=""):
    return (f'[[warm]]\nname = "{name}"\nschedule = "0 0 0 1 1 *"\nquery = """{query}"""\n'
            f'key = "{prefix}{{id}}"\nttl = "10m"\n{extra}\n')


def timed(command, **kwargs):
    start = time.monotonic()
    out = subprocess.run(command, check=True, capture_output=True, text=True, **kwargs)
    return time.monotonic() - start, out.stdout


def process_cpu(pid):
    """CPU seconds (user + system) a process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def servers():
    """The pids of Redis and of the MariaDB the bench reads (not every mariadbd: a replica applying the bench's own
    writes, or another scenario's server shutting down, is not load the daemon put on the database)."""
    with mysql().cursor() as c:
        c.execute("SELECT @@pid_file")
        with open(c.fetchone()[0]) as f:
            maria = int(f.read().split()[0])
    return {"redis": [int(r().info("server")["process_id"])], "mariadb": [maria]}


def quiet(timeout=60, window=0.25, share=0.05):
    """Waits until the bench's MariaDB uses under `share` of a core over `window` (at most `timeout` seconds): its
    background work after an earlier scenario (purging the history of a write storm, flushing a bulk load, sending
    its binlog to a replica) is not load the next measurement puts on it. Returns the seconds waited."""
    pid = servers()["mariadb"][0]
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        before = process_cpu(pid)
        time.sleep(window)
        if process_cpu(pid) - before < share * window:
            break
    return time.monotonic() - start


def cpu_split(command, repeat):
    """Runs `command` `repeat` times; per run: wall seconds and the CPU seconds of the command, MariaDB and Redis."""
    pids = servers()
    before = {name: sum(process_cpu(pid) for pid in group) for name, group in pids.items()}
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    for _ in range(repeat):
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = (time.monotonic() - start) / repeat
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    split = {name: (sum(process_cpu(pid) for pid in group) - before[name]) / repeat for name, group in pids.items()}
    split["cachewarden"] = (after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime) / repeat
    return wall, split


def gnu_time(command):
    """Wall seconds and peak RSS (MB) of a command, by GNU time."""
    out = subprocess.run(["/usr/bin/time", "-f", "%e %M"] + command, check=True, capture_output=True, text=True)
    wall, rss_kb = out.stderr.strip().splitlines()[-1].split()
    return float(wall), int(rss_kb) / 1024


def metric(name):
    with urllib.request.urlopen(f"http://127.0.0.1:{ADMIN_PORT}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
    return 0.0


def deleted():
    """Keys the running daemon has deleted, counted after Redis confirmed them."""
    try:
        return metric('cachewarden_invalidated_keys_total{action="delete"}')
    except OSError:
        return 0.0


def wait(predicate, limit, step=0.005):
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if predicate():
            return True
        time.sleep(step)
    return False


class Daemon:
    def __init__(self, path):
        self.process = subprocess.Popen([BIN, "run", "--config", path], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "warn"})
        if not wait(lambda: self._ready(), 30, 0.05):
            raise RuntimeError("daemon did not become ready")

    def _ready(self):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{ADMIN_PORT}/readyz", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    def status(self, field):
        with open(f"/proc/{self.process.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        return 0

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=30)


def resp(*args):
    parts = [f"*{len(args)}\r\n"]
    for arg in args:
        data = str(arg)
        parts.append(f"${len(data.encode())}\r\n{data}\r\n")
    return "".join(parts)


def pipe(commands_file):
    subprocess.run(["redis-cli", "-n", str(REDIS_DB), "--pipe"], stdin=open(commands_file), check=True,
                   capture_output=True)


def write_resp(path, lines):
    with open(path, "w") as f:
        for line in lines:
            f.write(line)


def setup():
    log("preparing the bench database")
    subprocess.run([BIN, "demo-init", "--config", config("")], check=True, capture_output=True)
    db = mysql()
    with db.cursor() as c:
        c.execute("CREATE TABLE IF NOT EXISTS million (id INT PRIMARY KEY, name VARCHAR(50), price DECIMAL(10,2),"
                  " category_id INT, updated_at DATETIME)")
        c.execute("SELECT COUNT(*) FROM million")
        if c.fetchone()[0] != 1_000_000:
            c.execute("TRUNCATE million")
            c.execute("INSERT INTO million SELECT seq, CONCAT('Item ', seq), 1 + seq % 500, seq % 100,"
                      " '2026-11-26 08:00:00' FROM seq_1_to_1000000")
        c.execute("CREATE TABLE IF NOT EXISTS churn (id INT PRIMARY KEY, v INT)")
        c.execute("SELECT COUNT(*) FROM churn")
        if c.fetchone()[0] != 100_000:
            c.execute("TRUNCATE churn")
            c.execute("INSERT INTO churn SELECT seq, 0 FROM seq_1_to_100000")
    flush()


def value_size():
    flush()
    cfg = config(warm_job("p", PRODUCTS_QUERY + " LIMIT 100", "bench:p:", JSON_ATTRIBUTES))
    subprocess.run([BIN, "run", "--once", "--config", cfg], check=True, capture_output=True)
    sizes = [len(r().get(k)) for k in r().scan_iter("bench:p:*")]
    flush()
    return int(statistics.mean(sizes))


def warm_10k(runs):
    size = value_size()
    job = warm_job("products", PRODUCTS_QUERY, "bench:p:", JSON_ATTRIBUTES)
    cfg, unprotected = config(job), config(job, protection=False)
    py = os.path.join(sys.prefix, "bin", "python")
    results = {"cachewarden": [], "python_setex": [], "python_pipelined": [], "redis_benchmark": []}
    for _ in range(runs):
        flush()
        seconds, _ = timed([BIN, "run", "--once", "--config", cfg])
        assert data_keys() == 10_000
        results["cachewarden"].append(10_000 / seconds)
        # Where the time goes: CPU per key of each process, over 10 more runs (the keys are simply rewritten).
        wall, split = cpu_split([BIN, "run", "--once", "--config", cfg], 10)
        for name, seconds in split.items():
            results.setdefault(f"cpu_us_per_key_{name}", []).append(seconds / 10_000 * 1e6)
        results.setdefault("wall_us_per_key", []).append(wall / 10_000 * 1e6)
        _, split = cpu_split([BIN, "run", "--once", "--config", unprotected], 10)
        results.setdefault("cpu_us_per_key_redis_unprotected", []).append(split["redis"] / 10_000 * 1e6)
        for name, script in (("python_setex", "warm_setex.py"), ("python_pipelined", "warm_pipelined.py")):
            flush()
            seconds, out = timed([py, os.path.join(BASELINES, script), MYSQL_URL, REDIS_URL, PRODUCTS_QUERY,
                                  "bench:p:", "600"])
            assert int(out) == 10_000 and data_keys() == 10_000
            results[name].append(10_000 / seconds)
        flush()
        redis_pid = servers()["redis"][0]
        redis_before = process_cpu(redis_pid)
        out = subprocess.run(["redis-benchmark", "-h", "127.0.0.1", "-p", "6379", "--dbnum", str(REDIS_DB),
                              "-t", "set", "-n", "200000", "-P", "64", "-d", str(size), "-r", "10000", "--csv"],
                             check=True, capture_output=True, text=True).stdout
        rps = [line for line in out.splitlines() if line.startswith('"SET"')][0].split(",")[1]
        results["redis_benchmark"].append(float(rps.strip('"')))
        results.setdefault("cpu_us_per_key_redis_benchmark", []).append(
            (process_cpu(redis_pid) - redis_before) / 200_000 * 1e6)
    flush()
    return size, {k: statistics.median(v) for k, v in results.items()}


MILLION_QUERY = "SELECT id, name, price, category_id, updated_at FROM million"


def warm_million(runs, cluster, flush, count):
    """Warm 1M rows `runs` times with protection and without, then once with the pipelined Python script, against
    the single node or a cluster (`cluster` as `config` takes it); `flush` empties it and `count()` counts the job's
    keys. Returns keys/s and peak RSS: (cachewarden median, its max RSS, unprotected median, Python, Python RSS)."""
    job = warm_job("million", MILLION_QUERY, "bench:m:")
    cfg, unprotected = config(job, cluster=cluster), config(job, protection=False, cluster=cluster)
    cw, cw_rss, plain = [], [], []
    for _ in range(runs):
        flush()
        seconds, rss = gnu_time([BIN, "run", "--once", "--config", cfg])
        assert count() == 1_000_000
        cw.append(1_000_000 / seconds)
        cw_rss.append(rss)
        flush()
        seconds, _ = gnu_time([BIN, "run", "--once", "--config", unprotected])
        plain.append(1_000_000 / seconds)
    flush()
    redis_url = "cluster+" + (cluster if isinstance(cluster, str) else CLUSTER_URL) if cluster else REDIS_URL
    seconds, py_rss = gnu_time([os.path.join(sys.prefix, "bin", "python"), os.path.join(BASELINES, "warm_pipelined.py"),
                                MYSQL_URL, redis_url, MILLION_QUERY, "bench:m:", "600"])
    assert count() == 1_000_000
    flush()
    return statistics.median(cw), max(cw_rss), statistics.median(plain), 1_000_000 / seconds, py_rss


def warm_1m(runs):
    cw, cw_rss, plain, py_rate, py_rss = warm_million(runs, False, flush, data_keys)
    return {"cachewarden": cw, "cachewarden_rss": cw_rss, "cachewarden_unprotected": plain,
            "python_pipelined": py_rate, "python_rss": py_rss}


COMPRESSED_QUERY = ("SELECT id, name, price, category_id, updated_at,"
                    " REPEAT(CONCAT(name, ' ships from the warehouse in two days; '), 6) AS description FROM million")
COMPRESS_OVER = 256


def stored_sizes(prefix, sample=2000):
    """Mean stored and decoded (JSON) bytes per key over a sample of keys."""
    import zstandard
    decompressor = zstandard.ZstdDecompressor()
    stored, rendered = [], []
    for key in list(r().scan_iter(f"{prefix}*", count=5000))[:sample]:
        value = r().get(key)
        stored.append(len(value))
        rendered.append(len(decompressor.decompress(value)) if value[:4] == b"\x28\xb5\x2f\xfd" else len(value))
    return statistics.mean(stored), statistics.mean(rendered)


def warm_1m_compressed(runs):
    """1M rows of ~420 B JSON, zstd over 256 B, against the same job uncompressed and the pipelined Python script
    compressing with the zstandard package."""
    compressed = config(warm_job("million", COMPRESSED_QUERY, "bench:z:",
                                 f'compress = "zstd"\ncompress_over = "{COMPRESS_OVER}B"'))
    plain = config(warm_job("million", COMPRESSED_QUERY, "bench:z:"))
    py = os.path.join(sys.prefix, "bin", "python")
    cw, cw_rss, uncompressed = [], [], []
    for _ in range(runs):
        flush()
        seconds, rss = gnu_time([BIN, "run", "--once", "--config", compressed])
        assert data_keys() == 1_000_000
        cw.append(1_000_000 / seconds)
        cw_rss.append(rss)
    stored, rendered = stored_sizes("bench:z:")
    used_compressed = r().info("memory")["used_memory"]
    for _ in range(runs):
        flush()
        seconds, _ = gnu_time([BIN, "run", "--once", "--config", plain])
        uncompressed.append(1_000_000 / seconds)
    used_plain = r().info("memory")["used_memory"]
    flush()
    seconds, _ = gnu_time([py, os.path.join(BASELINES, "warm_pipelined.py"), MYSQL_URL, REDIS_URL, COMPRESSED_QUERY,
                           "bench:z:", "600", "zstd", str(COMPRESS_OVER)])
    py_rate = 1_000_000 / seconds
    py_stored, _ = stored_sizes("bench:z:")
    flush()
    return {"cachewarden": statistics.median(cw), "cachewarden_rss": max(cw_rss),
            "cachewarden_uncompressed": statistics.median(uncompressed), "python_zstd": py_rate,
            "stored_bytes_per_key": stored, "rendered_bytes_per_key": rendered, "python_stored_bytes_per_key": py_stored,
            "redis_used_mb_compressed": used_compressed / 2**20, "redis_used_mb_plain": used_plain / 2**20}


def pubsub(runs):
    n_cw, n_py = 1_000_000, 200_000
    work = tempfile.mkdtemp(prefix="cwbench")
    sets, pubs = os.path.join(work, "set.resp"), os.path.join(work, "pub.resp")
    write_resp(sets, (resp("SET", f"bench:i:{i}", "1") for i in range(n_cw)))
    write_resp(pubs, (resp("PUBLISH", "bench_inv", f"bench:i:{i}") for i in range(n_cw)))
    hostile = os.path.join(work, "hostile.resp")
    write_resp(hostile, (resp("PUBLISH", "bench_inv", "x" * (1 << 20)) for _ in range(200)))
    rates, lost, burst_peaks, hostile_peaks = [], [], [], []
    cfg = config('[channel]\nname = "bench_inv"\nallow = ["bench:i:*"]\n\n')
    for _ in range(runs):
        flush()
        pipe(sets)
        daemon = Daemon(cfg)
        start = time.monotonic()
        pipe(pubs)
        # Deleted keys as counted after the Redis operations succeeded (DBSIZE would count protection markers).
        done = wait(lambda: deleted() >= n_cw, 120, 0.01)
        elapsed = time.monotonic() - start
        applied = metric('cachewarden_channel_messages_total{outcome="applied"}')
        burst_peaks.append(daemon.status("VmHWM") / 1024)
        # Then 200 hostile 1 MB messages (over max_message_bytes) in one go: refused as parsed, never buffered.
        pipe(hostile)
        wait(lambda: metric('cachewarden_channel_refused_total{reason="too_large"}') >= 200, 60, 0.05)
        hostile_peaks.append(daemon.status("VmHWM") / 1024)
        daemon.stop()
        left = sum(1 for _ in r().scan_iter("bench:i:*", count=10_000))
        rates.append(n_cw / elapsed if done else 0.0)
        lost.append(max(n_cw - applied, left))
    # The Python subscriber: fewer messages, it is much slower.
    flush()
    py_sets, py_pubs = os.path.join(work, "pyset.resp"), os.path.join(work, "pypub.resp")
    write_resp(py_sets, (resp("SET", f"bench:i:{i}", "1") for i in range(n_py)))
    write_resp(py_pubs, (resp("PUBLISH", "bench_inv", f"bench:i:{i}") for i in range(n_py)))
    pipe(py_sets)
    ready = os.path.join(work, "ready")
    py = os.path.join(sys.prefix, "bin", "python")
    sub = subprocess.Popen([py, os.path.join(BASELINES, "pubsub_del.py"), REDIS_URL, "bench_inv", str(n_py), ready],
                           stdout=subprocess.PIPE, text=True)
    wait(lambda: os.path.exists(ready), 10, 0.01)
    start = time.monotonic()
    pipe(py_pubs)
    out, _ = sub.communicate(timeout=600)
    elapsed = time.monotonic() - start
    received = int(out.split()[0])
    flush()
    return {"cachewarden": statistics.median(rates), "cachewarden_lost": max(lost), "messages": n_cw,
            "peak_rss_burst": max(burst_peaks), "peak_rss_hostile": max(hostile_peaks),
            "python": received / elapsed, "python_lost": n_py - received, "python_messages": n_py}


def mb(size):
    return "?" if size is None else f"{size / 1e6:.1f}"


def master_status():
    with mysql().cursor() as c:
        c.execute("SHOW MASTER STATUS")
        row = c.fetchone()
        return row[0], int(row[1])


def churn(ids, transactions):
    """Updates rows 1..ids in `transactions` equal transactions; returns the monotonic time of each commit."""
    db = mysql()
    step = ids // transactions
    commits = []
    with db.cursor() as c:
        for t in range(transactions):
            c.execute("UPDATE churn SET v = v + 1 WHERE id > %s AND id <= %s", (t * step, (t + 1) * step))
            commits.append(time.monotonic())
    return commits


def percentile(values, q):
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def live_burst(rows, transactions):
    """While a daemon follows the binlog: updates `rows` rows in `transactions` transactions and watches the
    daemon's delete counter. Returns the lag of each transaction, commit to its last key deleted (seconds)."""
    create_churn_keys(rows)
    base, per_txn = deleted(), rows // transactions
    seen = {}

    def watch():
        deadline = time.monotonic() + 60
        while len(seen) < transactions and time.monotonic() < deadline:
            count, now = deleted(), time.monotonic()
            for t in range(transactions):
                if t not in seen and count >= base + (t + 1) * per_txn:
                    seen[t] = now
            time.sleep(0.0005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    commits = churn(rows, transactions)
    watcher.join()
    if len(seen) < transactions:
        raise RuntimeError(f"only {len(seen)} of {transactions} transactions were invalidated within 60 s")
    return [seen[t] - commits[t] for t in range(transactions)]


def binlog_config(server_id, project=False):
    if project:
        rule = (f'[[on_change]]\ntable = "{DATABASE}.churn"\n'
                'project = { key = "bench:c:{id}", columns = ["id", "v"], ttl = "10m" }\n')
    else:
        rule = f'[[on_change]]\ntable = "{DATABASE}.churn"\ndelete = ["bench:c:{{id}}"]\n'
    return config(f'[channel]\nenabled = false\n\n[binlog]\nserver_id = {server_id}\n'
                  f'checkpoint_key = "bench:checkpoint"\nheartbeat = "1s"\non_gap = "none"\n\n{rule}')


def create_churn_keys(count):
    work = tempfile.mkdtemp(prefix="cwbench")
    path = os.path.join(work, "keys.resp")
    write_resp(path, (resp("SET", f"bench:c:{i}", "1") for i in range(1, count + 1)))
    pipe(path)


def binlog(runs):
    n = 100_000
    catch_up, live, live_txn = [], [], []
    py = os.path.join(sys.prefix, "bin", "python")
    for run in range(runs):
        # Catch-up: a backlog of n row events (100 transactions) replayed from a checkpoint.
        flush()
        create_churn_keys(n)
        file, pos = master_status()
        churn(n, 100)
        r().set("bench:checkpoint", f"{file}:{pos}")
        start = time.monotonic()
        daemon = Daemon(binlog_config(9000 + run))
        done = wait(lambda: deleted() >= n, 120, 0.005)
        catch_up.append(n / (time.monotonic() - start) if done else 0.0)
        # Live: bursts of 10,000 rows in 10 transactions while following. Per burst, the lag from the last commit
        # to the last key deleted; per transaction, from its commit to its last key deleted.
        for _ in range(LIVE_BURSTS):
            lags = live_burst(10_000, 10)
            live.append(lags[-1])
            live_txn.extend(lags)
        daemon.stop()
    # Catch-up in refresh-from-row-image mode: the same backlog, each row written as a projection.
    projected = []
    for run in range(runs):
        flush()
        file, pos = master_status()
        churn(n, 100)
        r().set("bench:checkpoint", f"{file}:{pos}")
        start = time.monotonic()
        daemon = Daemon(binlog_config(9300 + run, project=True))
        done = wait(lambda: metric('cachewarden_invalidated_keys_total{action="project"}') >= n, 120, 0.005)
        projected.append(n / (time.monotonic() - start) if done else 0.0)
        daemon.stop()
    # Catch-up with MariaDB's binlog compression on (log_bin_compress, zlib row events) beside off: the same backlog
    # on a MariaDB of the bench's own started each way, and the binlog bytes the backlog took. (MariaDB decides per
    # event by the size of its first row: the churn rows are small, so the threshold goes down to 10 bytes.)
    compression = {flag: compressed_catch_up(n, runs, flag) for flag in (False, True)}
    # The Python invalidator: catch-up over the same backlog, then live lag over a 10k-row burst.
    flush()
    create_churn_keys(n)
    file, pos = master_status()
    churn(n, 100)
    out = subprocess.run([py, os.path.join(BASELINES, "binlog_invalidator.py"), MYSQL_BASE, REDIS_URL, DATABASE,
                          "churn", "bench:c:", file, str(pos), str(n), "9100"],
                         check=True, capture_output=True, text=True, timeout=900).stdout
    rows, elapsed, _ = out.split()
    flush()
    create_churn_keys(10_000)
    file, pos = master_status()
    live_py = subprocess.Popen([py, os.path.join(BASELINES, "binlog_invalidator.py"), MYSQL_BASE, REDIS_URL,
                                DATABASE, "churn", "bench:c:", file, str(pos), "10000", "9101"],
                               stdout=subprocess.PIPE, text=True)
    time.sleep(1)  # connected and waiting at the current position
    churn(10_000, 10)
    committed_at = time.time()
    out, _ = live_py.communicate(timeout=600)
    py_lag = float(out.split()[2]) - committed_at
    flush()
    return {"catch_up": statistics.median(catch_up), "live_lag_ms": statistics.median(live) * 1000,
            "live_lag_p99_ms": percentile(live, 99) * 1000, "live_bursts": len(live),
            "live_txn_lag_p50_ms": percentile(live_txn, 50) * 1000,
            "live_txn_lag_p99_ms": percentile(live_txn, 99) * 1000, "live_txns": len(live_txn),
            "python": int(rows) / float(elapsed),
            "project_catch_up": statistics.median(projected), "python_live_lag_ms": py_lag * 1000,
            "compressed_off_catch_up": compression[False][0], "compressed_catch_up": compression[True][0],
            "binlog_bytes_off": compression[False][1], "binlog_bytes_on": compression[True][1]}


def own_mariadb(extra):
    """A MariaDB of the bench's own with a ROW binlog and `extra` options, on a free port: (process, base URL, dir)."""
    work = tempfile.mkdtemp(prefix="cwbench-maria")
    os.chmod(work, 0o755)
    shutil.chown(work, "mysql", "mysql")
    data = os.path.join(work, "data")
    subprocess.run(["mariadb-install-db", "--user=mysql", f"--datadir={data}", "--auth-root-authentication-method=normal",
                    "--skip-test-db"], check=True, capture_output=True)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(["mariadbd", "--no-defaults", "--user=mysql", f"--datadir={data}",
                                f"--socket={work}/mysqld.sock", f"--port={port}", "--bind-address=127.0.0.1",
                                "--skip-name-resolve", "--server-id=1", f"--log-bin={data}/binlog", "--binlog-format=ROW",
                                "--binlog-row-image=FULL", "--binlog-row-metadata=FULL", "--innodb-buffer-pool-size=256M",
                                f"--log-error={work}/error.log", *extra],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"mysql://root@127.0.0.1:{port}"

    def up():
        try:
            pymysql.connect(host="127.0.0.1", port=port, user="root", password="").close()
            return True
        except pymysql.err.OperationalError:
            return False

    if not wait(up, 60, 0.1):
        raise RuntimeError(f"the bench's own MariaDB did not start: {open(work + '/error.log').read()}")
    return process, base, work


def compressed_catch_up(n, runs, compress):
    """Binlog catch-up over a backlog of `n` row events on a MariaDB of the bench's own, with log_bin_compress on or
    off: (median row events/s, binlog bytes of the backlog)."""
    process, base, work = own_mariadb(["--log-bin-compress", "--log-bin-compress-min-len=10"] if compress else [])
    port = int(base.rsplit(":", 1)[1])
    try:
        db = pymysql.connect(host="127.0.0.1", port=port, user="root", password="", autocommit=True)
        with db.cursor() as c:
            c.execute(f"CREATE DATABASE {DATABASE}")
            c.execute(f"USE {DATABASE}")
            c.execute("CREATE TABLE churn (id INT PRIMARY KEY, v INT)")
            c.execute(f"INSERT INTO churn SELECT seq, 0 FROM seq_1_to_{n}")
        rates, size = [], None
        for run in range(runs):
            flush()
            create_churn_keys(n)
            with db.cursor() as c:
                c.execute("SHOW MASTER STATUS")
                file, pos = c.fetchone()[:2]
                step = n // 100
                for t in range(100):
                    c.execute(f"UPDATE {DATABASE}.churn SET v = v + 1 WHERE id > %s AND id <= %s",
                              (t * step, (t + 1) * step))
                c.execute("SHOW MASTER STATUS")
                end_file, end = c.fetchone()[:2]
                if compress:
                    c.execute(f"SHOW BINLOG EVENTS IN '{file}' FROM {pos} LIMIT 20")
                    if not any("compressed" in row[2].lower() for row in c.fetchall()):
                        raise RuntimeError("log_bin_compress is on but the row events are not compressed")
            size = int(end) - int(pos) if end_file == file else None
            r().set("bench:checkpoint", f"{file}:{pos}")
            path = rewrite(binlog_config(9350 + run + 10 * compress), MYSQL_URL, f"{base}/{DATABASE}")
            start = time.monotonic()
            daemon = Daemon(path)
            done = wait(lambda: deleted() >= n, 120, 0.005)
            rates.append(n / (time.monotonic() - start) if done else 0.0)
            daemon.stop()
        flush()
        return statistics.median(rates), size
    finally:
        process.terminate()
        process.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)


AUDIT_QUERY = MILLION_QUERY + " WHERE id <= 100000"


def audit_all(runs):
    """`audit --all` over a warmed 100k-key job beside warming it, and the Python audit script; the MariaDB CPU per
    audited key."""
    cfg = config(warm_job("audited", AUDIT_QUERY, "bench:a:"))
    warm, audit, maria_us = [], [], []
    for _ in range(runs):
        flush()
        seconds, _ = timed([BIN, "run", "--once", "--config", cfg])
        warm.append(100_000 / seconds)
        wall, split = cpu_split([BIN, "audit", "--all", "--config", cfg], 1)
        audit.append(100_000 / wall)
        maria_us.append(split["mariadb"] / 100_000 * 1e6)
    out = subprocess.run([BIN, "audit", "--all", "--config", cfg], check=True, capture_output=True, text=True).stdout
    assert "audited: 100000 checked, 0 wrong, 0 missing, 0 orphaned" in out, out
    seconds, out = timed([os.path.join(sys.prefix, "bin", "python"), os.path.join(BASELINES, "audit_all.py"),
                          MYSQL_URL, REDIS_URL, AUDIT_QUERY, "bench:a:"])
    assert out.split()[:3] == ["100000", "0", "0"], out
    flush()
    return {"warm": statistics.median(warm), "audit": statistics.median(audit),
            "mariadb_us_per_key": statistics.median(maria_us), "python_audit": 100_000 / seconds}


def rc(url=CLUSTER_URL):
    return redis.cluster.RedisCluster.from_url(url)


def flush_cluster(url=CLUSTER_URL):
    """Empties the cluster, as one cachewarden has used before: the read leases' set keeps its sentinel, so no phantom
    lease (which a fresh or flushed cluster starts with: an hour of invalidations through slot scripts, see
    exec::cache::cluster::guard) weighs on the steady-state figures."""
    rc(url).flushall(target_nodes=redis.cluster.RedisCluster.PRIMARIES)
    rc(url).zadd("cachewarden:{cachewarden}:readers", {"~": float("inf")})


def cluster_keys(pattern, url=CLUSTER_URL):
    """Keys matching `pattern` on every master of the cluster."""
    return sum(1 for _ in rc(url).scan_iter(match=pattern, count=10_000))


# A cluster of 3 masters and no replica, started for the bench on its own ports: the shared cluster's replicas apply
# every write again on the same two cores, which the single node (no replica) does not; this one does the same Redis
# work as the single node, spread over three processes.
BARE_CLUSTER_PORT = 7301


def backlog_on_cluster(url, n):
    """Keys bench:c:1..n on the cluster at `url`, a backlog of n row changes in the binlog after a checkpoint saved
    there; returns a function of a server_id giving a config whose delete rule catches up on that backlog."""
    pipe = rc(url).pipeline(transaction=False)
    for i in range(1, n + 1):
        pipe.set(f"bench:c:{i}", "1")
    pipe.execute()
    file, pos = master_status()
    churn(n, 100)
    rc(url).set("bench:checkpoint", f"{file}:{pos}")
    return lambda server_id: config(f'[channel]\nenabled = false\n\n[binlog]\nserver_id = {server_id}\n'
                                    f'checkpoint_key = "bench:checkpoint"\nheartbeat = "1s"\non_gap = "none"\n\n'
                                    f'[[on_change]]\ntable = "{DATABASE}.churn"\ndelete = ["bench:c:{{id}}"]\n',
                                    cluster=url)


def catch_up_on_cluster(runs, url, server_id):
    """Binlog catch-up in delete mode over a 100,000-row backlog on the cluster at `url`: row events/s, median."""
    n = 100_000
    rates = []
    for run in range(runs):
        flush_cluster(url)
        cfg = backlog_on_cluster(url, n)
        start = time.monotonic()
        daemon = Daemon(cfg(server_id + run))
        done = wait(lambda: deleted() >= n, 120, 0.005)
        rates.append(n / (time.monotonic() - start) if done else 0.0)
        daemon.stop()
    flush_cluster(url)
    return statistics.median(rates)


def channel_deletes(runs, cluster_url=None, n=200_000):
    """Deletes through the pub/sub channel against the single node, or the cluster at `cluster_url`: n one-key
    messages (messages/s until every key is deleted), then one `{"patterns": ["bench:p:*"]}` message over n keys
    (keys/s until the pattern delete is done); medians. Protection on, as in every deployment by default."""
    work = tempfile.mkdtemp(prefix="cwbench")
    pubs, pattern = os.path.join(work, "pub.resp"), os.path.join(work, "pattern.resp")
    write_resp(pubs, (resp("PUBLISH", "bench_inv", f"bench:i:{i}") for i in range(n)))
    write_resp(pattern, [resp("PUBLISH", "bench_inv", '{"patterns": ["bench:p:*"]}')])
    if cluster_url:
        port = urllib.parse.urlparse(cluster_url).port
        publish = lambda path: subprocess.run(["redis-cli", "-p", str(port), "--pipe"], stdin=open(path), check=True,
                                              capture_output=True)

        def fill(prefix):
            p = rc(cluster_url).pipeline(transaction=False)
            for i in range(n):
                p.set(f"{prefix}{i}", "1")
            p.execute()
        wipe = lambda: flush_cluster(cluster_url)
    else:
        publish = pipe
        sets = {prefix: os.path.join(work, f"{prefix[6]}.resp") for prefix in ("bench:i:", "bench:p:")}
        for prefix, path in sets.items():
            write_resp(path, (resp("SET", f"{prefix}{i}", "1") for i in range(n)))
        fill = lambda prefix: pipe(sets[prefix])
        wipe = flush
    cfg = config('[channel]\nname = "bench_inv"\nallow = ["bench:i:*", "bench:p:*"]\n\n', cluster=cluster_url or False)
    messages, patterns = [], []
    for _ in range(runs):
        wipe()
        fill("bench:i:")
        fill("bench:p:")
        daemon = Daemon(cfg)
        start = time.monotonic()
        publish(pubs)
        done = wait(lambda: deleted() >= n, 120, 0.01)
        messages.append(n / (time.monotonic() - start) if done else 0.0)
        start = time.monotonic()
        publish(pattern)
        done = wait(lambda: metric('cachewarden_invalidated_keys_total{action="pattern_delete"}') >= n, 120, 0.005)
        patterns.append(n / (time.monotonic() - start) if done else 0.0)
        daemon.stop()
    wipe()
    shutil.rmtree(work, ignore_errors=True)
    return statistics.median(messages), statistics.median(patterns)


@contextlib.contextmanager
def bare_cluster():
    """A cluster of 3 masters without replicas on BARE_CLUSTER_PORT.., started for the bench and stopped after; its URL."""
    scripts = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts", "redis-cluster")
    nodes = tempfile.mkdtemp(prefix="cwbench-cluster")
    subprocess.run([scripts, "start", str(BARE_CLUSTER_PORT), "3", "0", nodes], check=True, capture_output=True)
    try:
        url = f"redis://127.0.0.1:{BARE_CLUSTER_PORT}"
        flush_cluster(url)
        yield url
    finally:
        subprocess.run([scripts, "stop", str(BARE_CLUSTER_PORT), "3", nodes], check=False)
        shutil.rmtree(nodes, ignore_errors=True)


def cluster_channel(runs, url=None):
    """Channel deletes on the masters-only cluster at `url` (started here without one) and on the single node, the
    same hour."""
    if url is None:
        with bare_cluster() as url:
            return cluster_channel(runs, url)
    messages, patterns = channel_deletes(runs, url)
    single_messages, single_patterns = channel_deletes(runs)
    return {"bare_pubsub": messages, "bare_pattern": patterns, "single_pubsub": single_messages,
            "single_pattern": single_patterns}


RESHARD_SLOTS = 2000


def longest_stall(progress, until, during, step=0.01):
    """Samples `progress()` every `step` s until `until()` (or 300 s), calling `during(value)` after each sample; the
    longest time the highest value seen did not grow, from its first growth on (seconds)."""
    best, last_growth, stall, start = None, None, 0.0, time.monotonic()
    while not until() and time.monotonic() - start < 300:
        value, now = progress(), time.monotonic()
        if best is None or value > best:
            if last_growth is not None and best is not None:
                stall = max(stall, now - last_growth)
            best, last_growth = value, now
        during(value)
        time.sleep(step)
    return stall


def reshard_in_background(url):
    """Moves RESHARD_SLOTS slots and their keys from the cluster's first master to its second with `redis-cli
    --cluster reshard` (MIGRATING/IMPORTING, MIGRATE in batches: ASK redirects meanwhile); the process."""
    port = urllib.parse.urlparse(url).port
    nodes = subprocess.run(["redis-cli", "-p", str(port), "cluster", "nodes"], check=True, capture_output=True,
                           text=True).stdout
    ids = {int(line.split()[1].split("@")[0].rsplit(":", 1)[1]): line.split()[0] for line in nodes.splitlines()}
    return subprocess.Popen(["redis-cli", "--cluster", "reshard", f"127.0.0.1:{port}", "--cluster-from", ids[port],
                             "--cluster-to", ids[port + 1], "--cluster-slots", str(RESHARD_SLOTS), "--cluster-yes",
                             "--cluster-pipeline", "100"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def cluster_reshard(runs):
    """A slot migration (RESHARD_SLOTS slots, ~1/8 of the keyspace) during a warm of 1M rows and during a binlog
    catch-up of 100,000 deletes, each on a fresh masters-only cluster: the longest stall (time the written or deleted
    count did not grow, sampled every 10 ms) beside the same run without a migration, and what was lost."""
    def masters_keys(url):
        port = urllib.parse.urlparse(url).port
        masters = [redis.Redis(port=p) for p in range(port, port + 3)]
        return lambda: sum(master.dbsize() for master in masters)

    def migrate_once_past(url, threshold, moving):
        """What longest_stall calls after each sample: starts the migration (once) when the count passes
        `threshold`, its process kept in `moving`."""
        return lambda value: moving.append(reshard_in_background(url)) if not moving and value > threshold else None

    def warm(resharding):
        with bare_cluster() as url:
            count = masters_keys(url)
            cfg = config(warm_job("million", MILLION_QUERY, "bench:m:"), cluster=url)
            run = subprocess.Popen([BIN, "run", "--once", "--config", cfg], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
            moving = []
            start = migrate_once_past(url, 100_000, moving) if resharding else (lambda value: None)
            stall = longest_stall(count, lambda: run.poll() is not None, start)
            run.wait()
            for process in moving:
                process.wait(timeout=300)
            return stall, 1_000_000 - cluster_keys("bench:m:*", url), bool(moving)

    def catch_up(resharding, server_id):
        n = 100_000
        with bare_cluster() as url:
            daemon = Daemon(backlog_on_cluster(url, n)(server_id))
            moving = []
            start = migrate_once_past(url, 10_000, moving) if resharding else (lambda value: None)
            stall = longest_stall(deleted, lambda: deleted() >= n, start, 0.005)
            for process in moving:
                process.wait(timeout=300)
            daemon.stop()
            return stall, cluster_keys("bench:c:*", url), bool(moving)

    figures = {}
    for name, measure in (("warm", warm), ("catch_up", lambda moving: catch_up(moving, 9700 + moving))):
        quiet_stalls, moving_stalls, lost, migrated = [], [], [], []
        for _ in range(runs):
            stall, _, _ = measure(False)
            quiet_stalls.append(stall)
            stall, left, moved = measure(True)
            moving_stalls.append(stall)
            lost.append(left)
            migrated.append(moved)
        figures.update({f"{name}_stall_ms": max(moving_stalls) * 1000, f"{name}_quiet_stall_ms": max(quiet_stalls) * 1000,
                        f"{name}_lost": max(lost), f"{name}_migrated": all(migrated)})
    return figures


def cluster(runs):
    """Warm 1M and binlog catch-up (delete mode) against the 3-master cluster, with the Python baselines there; then
    the same cachewarden figures on a cluster of 3 masters without replicas (see BARE_CLUSTER_PORT)."""
    warm, warm_rss, plain, py_warm, py_rss = warm_million(runs, True, flush_cluster, lambda: cluster_keys("bench:m:*"))
    py = os.path.join(sys.prefix, "bin", "python")
    catch_up = catch_up_on_cluster(runs, CLUSTER_URL, 9400)
    flush_cluster()
    file, pos = master_status()
    churn(100_000, 100)
    out = subprocess.run([py, os.path.join(BASELINES, "binlog_invalidator.py"), MYSQL_BASE, "cluster+" + CLUSTER_URL,
                          DATABASE, "churn", "bench:c:", file, str(pos), str(100_000), "9500"],
                         check=True, capture_output=True, text=True, timeout=900).stdout
    rows, elapsed, _ = out.split()
    flush_cluster()
    figures = {"warm_1m": warm, "warm_1m_rss": warm_rss, "warm_1m_unprotected": plain,
               "python_warm_1m": py_warm, "python_rss": py_rss,
               "catch_up": catch_up, "python_catch_up": int(rows) / float(elapsed)}
    with bare_cluster() as url:
        bare, _, bare_plain, py_bare, _ = warm_million(runs, url, lambda: flush_cluster(url),
                                                       lambda: cluster_keys("bench:m:*", url))
        figures.update({"bare_warm_1m": bare, "bare_warm_1m_unprotected": bare_plain, "python_bare_warm_1m": py_bare,
                        "bare_catch_up": catch_up_on_cluster(runs, url, 9450)})
        figures.update(cluster_channel(runs, url))
    return figures


def ha_role(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ha", timeout=1) as response:
            return json.load(response).get("role")
    except (OSError, ValueError):
        return None


def ha_takeover(kills=5):
    """Two daemons with [ha]: the time from killing the leader (kill -9, or SIGTERM) to the standby leading, over
    `kills` kills each, with the default lease and with lease_ttl = "3s"; and with "3s" on the Redis Cluster, where
    a new leader also claims all 16,384 slots' copies of the fence before it leads."""
    results = {}
    ports = (ADMIN_PORT + 10, ADMIN_PORT + 11)
    for ttl, on_cluster in (("10s", False), ("3s", False), ("3s", True)):
        paths = []
        for name, port in zip(("a", "b"), ports):
            path = rewrite(config(warm_job("million", "SELECT id FROM million LIMIT 1", "bench:ha:"), cluster=on_cluster),
                           f'listen = "127.0.0.1:{ADMIN_PORT}"', f'listen = "127.0.0.1:{port}"',
                           f'\n[ha]\nenabled = true\nlease_ttl = "{ttl}"\nkey = "bench:leader"\ninstance = "{name}"\n')
            paths.append(path)
        (rc() if on_cluster else r()).delete("bench:leader")
        key = ttl + ("_cluster" if on_cluster else "")
        start = lambda path: subprocess.Popen([BIN, "run", "--config", path], stdout=subprocess.DEVNULL,
                                              stderr=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "warn"})
        processes = [start(p) for p in paths]
        for signal_name, sig in (("kill9", signal.SIGKILL), ("sigterm", signal.SIGTERM)):
            times = []
            for _ in range(kills):
                assert wait(lambda: sorted(ha_role(p) or "" for p in ports) == ["leader", "standby"], 30, 0.02)
                leader = 0 if ha_role(ports[0]) == "leader" else 1
                killed_at = time.monotonic()
                processes[leader].send_signal(sig)
                took = wait(lambda: ha_role(ports[1 - leader]) == "leader", 60, 0.005)
                times.append(time.monotonic() - killed_at if took else float("inf"))
                processes[leader].wait(timeout=30)
                processes[leader] = start(paths[leader])
            results[f"{signal_name}_{key}_p50_s"] = statistics.median(times)
            results[f"{signal_name}_{key}_max_s"] = max(times)
        for process in processes:
            process.terminate()
            process.wait(timeout=30)
    flush()
    flush_cluster()
    return results


def idle():
    cfg = config(warm_job("products", PRODUCTS_QUERY, "bench:p:", JSON_ATTRIBUTES) + "[channel]\nname = \"bench_idle\"\n")
    daemon = Daemon(cfg)
    time.sleep(2)
    before = process_cpu(daemon.process.pid)
    time.sleep(10)
    cpu = (process_cpu(daemon.process.pid) - before) / 10 * 100
    rss = daemon.status("VmRSS") / 1024
    daemon.stop()
    return {"rss_mb": rss, "cpu_percent": cpu}


def machine():
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {
        "cachewarden": subprocess.run([BIN, "--version"], capture_output=True, text=True).stdout.strip(),
        "redis": subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()[2],
        "mariadb": mysql().get_server_info(),
        "python": platform.python_version(),
        "redis-py": redis.__version__,
        "pymysql": pymysql.__version__,
    }
    return f"{os.cpu_count()} cores ({cpu}), " + ", ".join(f"{k} {v}" for k, v in versions.items())


def notes(results):
    """Where the time goes: the part of the report computed from this run's figures, then the profile."""
    (_, w), m, b = results["warm_10k"], results["warm_1m"], results["binlog"]
    cores = os.cpu_count()
    cw, maria, rd = (w[f"cpu_us_per_key_{name}"] for name in ("cachewarden", "mariadb", "redis"))
    total = cw + maria + rd
    top = ceiling(w)
    needed = w["redis_benchmark"] / 3
    verdict = ("below what the target needs, so on this machine the target cannot be met by overlapping the work "
               "better: only by doing less of it" if top < needed else "above what the target needs")
    return f"""
## Where the time goes, and the targets not met

- **warm 10k within 3x of the redis-benchmark limit.** The limit is {w['redis_benchmark']:.0f} SET/s, so the
  target is {needed:.0f} keys/s, {1e6 / needed:.1f} µs per key. One warm run costs, per key, {cw:.2f} µs of
  cachewarden CPU (the whole process: start, config, connections, query stream, decoding, JSON, Redis protocol),
  {maria:.2f} µs of MariaDB CPU and {rd:.2f} µs of Redis CPU ({w['cpu_us_per_key_redis_unprotected']:.2f} µs with
  stale-set protection off; a bare SET under redis-benchmark costs Redis {w['cpu_us_per_key_redis_benchmark']:.2f}
  µs). That is {total:.2f} µs of CPU per key on {cores} cores: even with every process busy all the time no run
  could beat {top:.0f} keys/s, {verdict}. The measured run takes {w['wall_us_per_key']:.2f} µs per key.
  redis-benchmark measures SETs alone (50 connections, no TTL, no database, no JSON); for a warm job Redis is one
  of three processes sharing the two cores.
- **cachewarden's own CPU, by callgrind** (`valgrind --tool=callgrind cachewarden run --once`, 10k products,
  instructions, measured on 2026-11-26): 177M in all; decoding cells 19% (validating the declared JSON column 5%,
  UTF-8 checks 3%), the MySQL row stream (sqlx) 14%, rendering JSON 13% (string escaping 9%), building and sending
  the Redis commands 17%, parsing Redis' replies 10% (redis-rs parses a `+QUEUED` per SET inside MULTI, then EXEC's
  array). Profiling first found dates formatted through `format!` (13% of the run), cell, value and command
  buffers grown by reallocation (9% and 9%) and byte-at-a-time JSON escaping; those are fixed.
- **Stale-set protection** (on by default). Invalidations leave markers only while a read is in flight (a read
  lease). A warm batch first tries the optimistic path: WATCH the version counter, and if nothing has been
  invalidated since the read, plain SETs in MULTI/EXEC; otherwise the Lua guard script. Redis spends
  {rd:.2f} µs per key on a protected warm run against {w['cpu_us_per_key_redis_unprotected']:.2f} µs unprotected
  (through the guard script it was about 2.5 µs); warm 1M {m['cachewarden']:.0f} keys/s with,
  {m['cachewarden_unprotected']:.0f} without. Pub/sub and binlog deletes with no warm run in flight pay one INCR
  per batch. In the first version (a marker read per written key and a marker per deleted key, always) warm 1M ran
  at 183k keys/s, pub/sub at 152k/s, binlog catch-up at 178k/s and live lag was 41 ms.
- **Binlog live lag** is measured per transaction too: p50 {b['live_txn_lag_p50_ms']:.1f} ms, p99
  {b['live_txn_lag_p99_ms']:.1f} ms over {b['live_txns']} transactions of 1,000 rows (commit to the daemon's delete
  counter covering the transaction, polled every 0.5 ms over HTTP, so the figures include up to about 1 ms of
  polling).
{cdc.notes(results["cdc_single_row"], results["cdc_storm"], cores)}
- The Python figures for 1M rows, pub/sub and the binlog come from one run each (they take minutes). Figures move
  between runs by up to ±25% on this shared 2-core machine; redis-benchmark itself does.
"""


def ceiling(w):
    """The most keys/s the warm 10k CPU costs allow on this machine, every core busy all the time."""
    total = w["cpu_us_per_key_cachewarden"] + w["cpu_us_per_key_mariadb"] + w["cpu_us_per_key_redis"]
    return os.cpu_count() / total * 1e6


def report(results, runs):
    w, m, p, b, i = (results[k] for k in ("warm_10k", "warm_1m", "pubsub", "binlog", "idle"))
    z = results["warm_1m_compressed"]
    h = results["ha_takeover"]
    so = results["source_takeover"]
    pw = results["partitioned_warm"]
    c, rs = results["cluster"], results["cluster_reshard"]
    s, st = results["cdc_single_row"], results["cdc_storm"]
    lag = results["reader_lag"]
    j = results["join_storm"]
    a = results["audit_all"]
    mf = results["miss_fill"]
    tn = results["top_n"]
    hu = results["hash_update"]
    size, w = w
    rows = [
        ("warm 10k products (~%d B values), keys/s" % size, w["cachewarden"],
         f"{w['python_setex']:.0f} per-key / {w['python_pipelined']:.0f} pipelined",
         f"{w['redis_benchmark']:.0f}",
         f"{w['cachewarden'] / w['python_setex']:.1f}x per-key, {w['cachewarden'] / w['python_pipelined']:.1f}x"
         f" pipelined, {w['redis_benchmark'] / w['cachewarden']:.1f}x below the limit",
         "≥ 25x per-key, ≥ 4x pipelined, within 3x of the limit"),
        ("warm 10k: CPU per key, µs (cachewarden / MariaDB / Redis)",
         f"{w['cpu_us_per_key_cachewarden']:.2f} / {w['cpu_us_per_key_mariadb']:.2f} / {w['cpu_us_per_key_redis']:.2f}",
         "-", f"Redis {w['cpu_us_per_key_redis_benchmark']:.2f} per SET",
         f"ceiling on {os.cpu_count()} cores: {ceiling(w):.0f} keys/s", "(evidence, no target)"),
        ("warm 1M rows, keys/s (peak RSS)", f"{m['cachewarden']:.0f} ({m['cachewarden_rss']:.0f} MB)",
         f"{m['python_pipelined']:.0f} pipelined ({m['python_rss']:.0f} MB)", "-",
         f"{m['cachewarden'] / m['python_pipelined']:.1f}x", "≥ 250k keys/s, ≤ 64 MB"),
        ("stale-set protection cost: warm 1M keys/s with / without", f"{m['cachewarden']:.0f} / "
         f"{m['cachewarden_unprotected']:.0f}", "-", "-",
         f"{m['cachewarden'] / m['cachewarden_unprotected']:.2f}x", "(measured, no target)"),
        (f"warm 1M rows of ~{z['rendered_bytes_per_key']:.0f} B JSON, zstd over {COMPRESS_OVER} B: keys/s (peak RSS);"
         " bytes per key stored; Redis used memory",
         f"{z['cachewarden']:.0f} ({z['cachewarden_rss']:.0f} MB); {z['stored_bytes_per_key']:.0f} B of"
         f" {z['rendered_bytes_per_key']:.0f}; {z['redis_used_mb_compressed']:.0f} MB vs {z['redis_used_mb_plain']:.0f} MB"
         f" plain (plain run {z['cachewarden_uncompressed']:.0f} keys/s)",
         f"{z['python_zstd']:.0f} pipelined + zstandard ({z['python_stored_bytes_per_key']:.0f} B per key)", "-",
         f"{z['cachewarden'] / z['python_zstd']:.1f}x; compression costs"
         f" {1 - z['cachewarden'] / z['cachewarden_uncompressed']:.0%} of the plain rate",
         "(measured, no target)"),
        ("pub/sub invalidations/s (lost)", f"{p['cachewarden']:.0f} ({p['cachewarden_lost']:.0f} of {p['messages']})",
         f"{p['python']:.0f} ({p['python_lost']} of {p['python_messages']})", "-",
         f"{p['cachewarden'] / p['python']:.1f}x", "≥ 150k/s, 0 lost, ≥ 10x"),
        ("pub/sub peak RSS: after the 1M burst, after 200 more 1 MB hostile messages",
         f"{p['peak_rss_burst']:.0f} MB, {p['peak_rss_hostile']:.0f} MB", "-", "-", "-", "≤ 64 MB (queue ≤ 32 MiB)"),
        ("binlog catch-up, delete mode, row events/s", f"{b['catch_up']:.0f}",
         f"{b['python']:.0f} (python-mysql-replication)", "-", f"{b['catch_up'] / b['python']:.1f}x",
         "≥ 200k/s, ≥ 10x"),
        ("binlog catch-up, refresh from row image (projection), row events/s", f"{b['project_catch_up']:.0f}", "-",
         "-", "-", "≥ 50k/s"),
        ("binlog catch-up, delete mode, MariaDB log_bin_compress on / off, row events/s (binlog MB of the backlog)",
         f"{b['compressed_catch_up']:.0f} / {b['compressed_off_catch_up']:.0f}"
         f" ({mb(b['binlog_bytes_on'])} / {mb(b['binlog_bytes_off'])})", "-", "-",
         f"{b['compressed_catch_up'] / b['compressed_off_catch_up']:.2f}x", "decoded, not refused"),
        ("binlog live: 10k-row burst, last commit → last key deleted", f"{b['live_lag_ms']:.0f} ms p50,"
         f" {b['live_lag_p99_ms']:.0f} ms p99 ({b['live_bursts']} bursts)", f"{b['python_live_lag_ms']:.0f} ms (python-mysql-replication)", "-",
         f"{b['python_live_lag_ms'] / b['live_lag_ms']:.1f}x", "≤ 50 ms, ≥ 10x"),
        ("binlog single-row transactions, refresh rule, row events/s (daemon CPU)",
         f"{s['refresh']:.0f} ({s['refresh_cpu_us_per_event']:.1f} µs/event, {s['refresh_cpu_percent']:.0f}% of a core)",
         f"{s['python_refresh']:.0f} (python-mysql-replication, SELECT + SET per row)", "-",
         f"{s['refresh'] / s['python_refresh']:.1f}x", "≥ 50k/s catch-up (200k txns), ≥ 20k/s"),
        ("binlog single-row transactions, delete rule, row events/s (daemon CPU)",
         f"{s['delete']:.0f} ({s['delete_cpu_us_per_event']:.1f} µs/event, {s['delete_cpu_percent']:.0f}% of a core)",
         "-", "-", "-", "≥ 30k/s"),
        (f"hot-row storm: {cdc.STORM_WRITERS} writers on {cdc.HOT_ROWS} rows for {cdc.STORM_SECONDS} s"
         f" ({st['writes_per_s']:.0f} txn/s), refresh rule: largest lag (a probe row every"
         f" {cdc.PROBE_EVERY * 1000:.0f} ms, commit → in Redis, 1 ms polling); the lag gauge's largest reading"
         " (whole-second binlog timestamps: up to 1 s high)",
         f"{st['cold_max_ms']:.0f} ms (worst run {st['cold_max_worst_ms']:.0f} ms); gauge {st['max_lag_s']:.2f} s"
         f" (worst run {st['max_lag_worst_s']:.2f} s)",
         f"refresher at {s['python_refresh']:.0f}/s falls {st['writes_per_s'] - s['python_refresh']:.0f} events/s behind",
         "-", "-", "< 1 s"),
        (f"hot-row storm: the probe row changed every {cdc.PROBE_EVERY * 1000:.0f} ms, commit → in Redis",
         f"{st['cold_p50_ms']:.0f} ms p50, {st['cold_p99_ms']:.0f} ms p99 (worst run {st['cold_p99_worst_ms']:.0f} ms)",
         "-", "-", "-", "≤ 100 ms p50, ≤ 500 ms p99"),
        ("hot-row storm: writers stop → every hot key equals its row",
         f"{st['converged_after_s'] * 1000:.0f} ms ({st['events']:.0f} events → {st['keys_after_coalescing']:.0f}"
         f" key actions in {st['batches']:.0f} batches; daemon {st['daemon_cpu_percent']:.0f}% of a core)",
         "-", "-", "-", "≤ 1 s"),
        *[(f"refresh read from a replica with MASTER_DELAY = {d['delay_s']} (changes show"
           f" {max(d['delay_s'] - 1, 0)} to {d['delay_s']} s after commit), commit → key right, p50 / max of"
           f" {lag['changes']} changes 100 ms apart: refresh_wait {lag['refresh_wait']}; refresh_fallback to the"
           " writer after 250 ms; reading the writer",
           f"{d['wait_p50_ms']:.0f} / {d['wait_max_ms']:.0f} ms; {d['fallback_p50_ms']:.0f} /"
           f" {d['fallback_max_ms']:.0f} ms; {lag['writer_p50_ms']:.0f} / {lag['writer_max_ms']:.0f} ms"
           + (f" ({d['wait_missing'] + d['fallback_missing'] + lag['writer_missing']} keys never right)"
              if d['wait_missing'] + d['fallback_missing'] + lag['writer_missing'] else ""),
           "-", "-", "-", "every key right (none missing)") for d in lag["by_delay"]],
        ("Redis Cluster, 3 masters: warm 1M rows, keys/s (peak RSS); without protection",
         f"{c['warm_1m']:.0f} ({c['warm_1m_rss']:.0f} MB); {c['warm_1m_unprotected']:.0f}",
         f"{c['python_warm_1m']:.0f} pipelined, RedisCluster ({c['python_rss']:.0f} MB)", "-",
         f"{c['warm_1m'] / c['python_warm_1m']:.1f}x; {c['warm_1m'] / m['cachewarden']:.2f}x the single node",
         "(measured, no target)"),
        ("Redis Cluster, 3 masters: binlog catch-up, delete mode, row events/s", f"{c['catch_up']:.0f}",
         f"{c['python_catch_up']:.0f} (python-mysql-replication, RedisCluster)", "-",
         f"{c['catch_up'] / c['python_catch_up']:.1f}x; {c['catch_up'] / b['catch_up']:.2f}x the single node",
         "(measured, no target)"),
        ("Redis Cluster, 3 masters without replicas (the single node's Redis work): warm 1M rows, keys/s; without"
         " protection; binlog catch-up, row events/s",
         f"{c['bare_warm_1m']:.0f}; {c['bare_warm_1m_unprotected']:.0f}; {c['bare_catch_up']:.0f}",
         f"{c['python_bare_warm_1m']:.0f} pipelined warm, RedisCluster", "-",
         f"warm {c['bare_warm_1m'] / m['cachewarden']:.2f}x, catch-up {c['bare_catch_up'] / b['catch_up']:.2f}x the"
         " single node", "≥ 0.8x the single node"),
        ("Redis Cluster, 3 masters without replicas: pub/sub deletes, messages/s (200,000 one-key messages); one"
         " pattern delete over 200,000 keys, keys/s; beside the single node, the same hour",
         f"{c['bare_pubsub']:.0f} vs {c['single_pubsub']:.0f}; {c['bare_pattern']:.0f} vs {c['single_pattern']:.0f}",
         "-", "-", f"pub/sub {c['bare_pubsub'] / c['single_pubsub']:.2f}x, pattern"
         f" {c['bare_pattern'] / c['single_pattern']:.2f}x the single node", "(measured beside the single node)"),
        (f"Redis Cluster, 3 masters without replicas: {RESHARD_SLOTS} slots migrated (redis-cli --cluster reshard)"
         " during a warm of 1M rows; during a binlog catch-up of 100,000 deletes: longest stall (no progress), beside"
         " the same run without a migration; keys lost",
         f"{rs['warm_stall_ms']:.0f} ms (without: {rs['warm_quiet_stall_ms']:.0f} ms); {rs['catch_up_stall_ms']:.0f} ms"
         f" (without: {rs['catch_up_quiet_stall_ms']:.0f} ms); {rs['warm_lost']} and {rs['catch_up_lost']} lost",
         "-", "-", "-", "no stall over 100 ms, nothing lost"),
        ("HA takeover after kill -9 of the leader, p50 / max of 5 (lease_ttl 10 s; 3 s)",
         f"{h['kill9_10s_p50_s']:.2f} s / {h['kill9_10s_max_s']:.2f} s; {h['kill9_3s_p50_s']:.2f} s /"
         f" {h['kill9_3s_max_s']:.2f} s", "-", "-", "-", "≤ lease_ttl + one renew interval"),
        ("HA takeover after SIGTERM of the leader, p50 / max of 5 (lease_ttl 10 s; 3 s)",
         f"{h['sigterm_10s_p50_s'] * 1000:.0f} ms / {h['sigterm_10s_max_s'] * 1000:.0f} ms;"
         f" {h['sigterm_3s_p50_s'] * 1000:.0f} ms / {h['sigterm_3s_max_s'] * 1000:.0f} ms", "-", "-", "-", "< 1 s"),
        ("HA takeover on the Redis Cluster, lease_ttl 3 s: kill -9 p50 / max; SIGTERM p50 / max (of 5 each)",
         f"{h['kill9_3s_cluster_p50_s']:.2f} s / {h['kill9_3s_cluster_max_s']:.2f} s;"
         f" {h['sigterm_3s_cluster_p50_s'] * 1000:.0f} ms / {h['sigterm_3s_cluster_max_s'] * 1000:.0f} ms",
         "-", "-", "-", "≤ lease_ttl + one renew interval; < 1 s"),
        ("work sharing, 2 instances × 2 sources: the holder of a source killed (kill -9) → the other follows it; a"
         " change committed after the kill → its key, p50 / max of 5 (lease_ttl 10 s; 3 s)",
         f"{so['kill9_10s_followed_p50_s']:.2f} / {so['kill9_10s_followed_max_s']:.2f} s, key"
         f" {so['kill9_10s_key_p50_s']:.2f} / {so['kill9_10s_key_max_s']:.2f} s; {so['kill9_3s_followed_p50_s']:.2f} /"
         f" {so['kill9_3s_followed_max_s']:.2f} s, key {so['kill9_3s_key_p50_s']:.2f} / {so['kill9_3s_key_max_s']:.2f} s",
         "-", "-", "-", "≤ lease_ttl + one renew interval"),
        ("work sharing: the holder stopped (SIGTERM) → the other follows; the change → its key, p50 / max of 5"
         " (lease_ttl 10 s; 3 s)",
         f"{so['sigterm_10s_followed_p50_s'] * 1000:.0f} / {so['sigterm_10s_followed_max_s'] * 1000:.0f} ms, key"
         f" {so['sigterm_10s_key_p50_s'] * 1000:.0f} / {so['sigterm_10s_key_max_s'] * 1000:.0f} ms;"
         f" {so['sigterm_3s_followed_p50_s'] * 1000:.0f} / {so['sigterm_3s_followed_max_s'] * 1000:.0f} ms, key"
         f" {so['sigterm_3s_key_p50_s'] * 1000:.0f} / {so['sigterm_3s_key_max_s'] * 1000:.0f} ms", "-", "-", "-", "< 1 s"),
        ("warm 1M rows under [ha], keys/s: one instance, whole; partitions = 6 with 1 / 2 / 3 instances (keys each"
         " instance wrote, with 3)",
         f"{pw['whole_1_keys_per_s']:.0f}; {pw['pieces_1_keys_per_s']:.0f} / {pw['pieces_2_keys_per_s']:.0f} /"
         f" {pw['pieces_3_keys_per_s']:.0f} ({pw['pieces_3_split']})",
         f"{m['python_pipelined']:.0f} (one pipelined script)", "-",
         f"{pw['pieces_3_keys_per_s'] / pw['whole_1_keys_per_s']:.2f}x with 3 instances on {os.cpu_count()} cores",
         "(evidence: the split, no target)"),
        (f"derived join rules, no [[on_change]]: {j['renames']} categories renamed ({j['keys']} of 100,000 keys),"
         " last commit → every key right",
         f"{j['settled_ms']:.0f} ms (worst run {j['settled_worst_ms']:.0f} ms); {j['keys_per_change']:.0f} keys per"
         f" change; MariaDB {j['mariadb_cpu_ms']:.0f} ms of CPU",
         f"{j['python_settled_ms']:.0f} ms (join refresher, python-mysql-replication"
         f"{'' if j['python_right'] else '; some keys wrong'})", "-",
         f"{j['python_settled_ms'] / j['settled_ms']:.1f}x", "(measured, no target)"),
        ("… against re-warming the whole join job once per change (`warm = [\"job\"]`)",
         f"{j['rewarm_ms']:.0f} ms and MariaDB {j['rewarm_mariadb_cpu_ms']:.0f} ms of CPU per re-warm (100,000 keys)",
         "-", "-", f"{j['rewarm_ms'] * j['renames'] / j['settled_ms']:.0f}x the time for {j['renames']} changes"
         " (undebounced)", "-"),
        ("audit --all, 100,000 keys of one job: keys/s beside warming them; MariaDB CPU per audited key",
         f"{a['audit']:.0f} vs warm {a['warm']:.0f} ({a['audit'] / a['warm']:.2f}x); {a['mariadb_us_per_key']:.2f} µs",
         f"{a['python_audit']:.0f} (stream + MGET + compare)", "-",
         f"{a['audit'] / a['python_audit']:.1f}x", "≥ 0.5x the warm rate"),
        (f"fill on miss: a burst of {mf['burst']:,} distinct misses, fills/s (statements MariaDB ran per fill);"
         " single misses one at a time, miss → key there as the client sees it, p50 / p99",
         f"{mf['fills_per_s']:.0f} ({mf['statements_per_fill']:.3f}); {mf['single_p50_ms']:.1f} /"
         f" {mf['single_p99_ms']:.1f} ms",
         f"{mf['python_fills_per_s']:.0f} (SELECT + SET per miss, {mf['python_burst']:,} misses);"
         f" {mf['python_single_p50_ms']:.1f} / {mf['python_single_p99_ms']:.1f} ms", "-",
         f"{mf['fills_per_s'] / mf['python_fills_per_s']:.1f}x", "(measured; the issue's 100 ms is a p99 bound)"),
        (f"top 100 of 1M rows kept in a sorted set under {tn['updates_per_s']:.0f} score updates/s: commit → ZSCORE"
         " shows it, p50 / p99 / max (1 ms polling); MariaDB CPU per second of load; re-warms",
         f"binlog: {tn['fresh_p50_ms']:.1f} / {tn['fresh_p99_ms']:.1f} / {tn['fresh_max_ms']:.0f} ms; MariaDB"
         f" {tn['mariadb_cpu_per_s'] * 1000:.0f} ms/s; {tn['rewarms']:.0f} re-warms"
         f"{'' if tn['exact_after'] else '; NOT exact after the load'}; (re-run every 1 s:"
         f" {tn['rerun_fresh_p50_ms']:.0f} / {tn['rerun_fresh_p99_ms']:.0f} ms, MariaDB"
         f" {tn['rerun_mariadb_cpu_per_s'] * 1000:.0f} ms/s)",
         f"query every 1 s + MULTI: {tn['python_fresh_p50_ms']:.0f} / {tn['python_fresh_p99_ms']:.0f} /"
         f" {tn['python_fresh_max_ms']:.0f} ms; MariaDB {tn['python_mariadb_cpu_per_s'] * 1000:.0f} ms/s", "-",
         f"{tn['python_fresh_p50_ms'] / max(tn['fresh_p50_ms'], 0.001):.0f}x fresher (p50)", "(measured, no target)"),
        ("a warm run again after one column of 100,000 rows changed: keys/s, Redis CPU (hash: only the changed field"
         " written; string: the whole JSON)",
         f"hash {hu['hash_keys_per_s']:.0f} ({hu['hash_redis_cpu_ms']:.0f} ms); string {hu['string_keys_per_s']:.0f}"
         f" ({hu['string_redis_cpu_ms']:.0f} ms)", "-", "-",
         f"{hu['hash_keys_per_s'] / hu['string_keys_per_s']:.2f}x", "(measured, no target)"),
        ("idle daemon: RSS, CPU", f"{i['rss_mb']:.1f} MB, {i['cpu_percent']:.2f}%", "-", "-", "-", "≤ 12 MB, ~0"),
    ]
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `scripts/bench` on {datetime.date.today().isoformat()}; medians of {runs} runs (the Python"
        " 1M-row, pub/sub and binlog baselines run once: they are slow). Release build, local Redis and MariaDB on"
        " the same machine. MySQL connections are plaintext on both sides (the Python clients do not negotiate TLS);"
        " the figures include process start-up and connecting, as a cron job would pay them.",
        "",
        f"Machine: {machine()}.",
        "",
        "| scenario | cachewarden | plain Python | limit (redis-benchmark -P 64) | ratio | target |",
        "|---|---|---|---|---|---|",
    ]
    for name, cw, py, limit, ratio, target in rows:
        cw = f"{cw:.0f}" if isinstance(cw, float) else cw
        lines.append(f"| {name} | {cw} | {py} | {limit} | {ratio} | {target} |")
    lines += [notes(results), "Raw figures:", "", "```json", json.dumps(results, indent=2, default=str), "```", ""]
    return "\n".join(lines)


def flatten(figures, prefix=""):
    """A scenario's numeric figures as {"path.to.figure": value}."""
    flat = {}
    for key, value in figures.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[f"{prefix}{key}"] = float(value)
    return flat


def compare(name, scenario, other, rounds):
    """Runs `scenario` once per round with each build in turn (this one first in odd rounds, `other` first in even
    ones, so that neither always runs on a warmer machine) and prints the medians of every figure side by side: a
    regression check between two commits, with the Python baselines from the same runs."""
    global BIN
    builds = [BIN, other]
    figures = {build: [] for build in builds}
    for round_ in range(rounds):
        for build in builds if round_ % 2 == 0 else builds[::-1]:
            BIN = build
            log(f"{name}, round {round_ + 1} of {rounds}: {build}")
            figures[build].append(flatten(scenario(1)))
    BIN = builds[0]
    print(f"| {name} (median of {rounds}) | this build | {other} | this / other |")
    print("|---|---|---|---|")
    for key in sorted(set().union(*figures[builds[0]])):
        ours, theirs = ([run[key] for run in figures[build] if key in run] for build in builds)
        if not ours or not theirs:
            continue
        a, b = statistics.median(ours), statistics.median(theirs)
        print(f"| {key} | {a:.4g} | {b:.4g} | {a / b:.3f} |" if b else f"| {key} | {a:.4g} | {b:.4g} | - |")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print the report, leave docs/BENCHMARKS.md alone")
    parser.add_argument("--only", help="run one scenario and print its figures (warm_10k, warm_1m, warm_1m_compressed, pubsub, binlog, "
                        "cdc_single_row, cdc_storm, reader_lag, join_storm, audit_all, miss_fill, cluster, cluster_channel, cluster_reshard, top_n, hash_update, ha_takeover, source_takeover, partitioned_warm, idle)")
    parser.add_argument("--against", metavar="BINARY",
                        help="with --only: run the scenario --runs times with this build and with BINARY (an older "
                             "commit's target/release/cachewarden) in turn, and print both side by side")
    args = parser.parse_args()
    if args.against and not args.only:
        parser.error("--against compares one scenario: name it with --only")
    setup()
    this = sys.modules[__name__]
    scenarios = {
        "warm_10k": warm_10k, "warm_1m": warm_1m, "warm_1m_compressed": warm_1m_compressed, "pubsub": pubsub,
        "binlog": binlog, "cdc_single_row": lambda runs: cdc.single_row(this, runs),
        "cdc_storm": lambda runs: cdc.storm(this, runs), "reader_lag": lambda runs: cdc.reader_lag(this, runs),
        "join_storm": lambda runs: derived.join_storm(this, runs), "audit_all": audit_all,
        "miss_fill": lambda runs: misses.miss_fill(this, runs), "cluster": cluster, "cluster_channel": cluster_channel,
        "cluster_reshard": cluster_reshard,
        "top_n": lambda runs: shapes.top_n(this, runs), "hash_update": lambda runs: shapes.hash_update(this, runs),
        "ha_takeover": lambda runs: ha_takeover(),
        "source_takeover": lambda runs: sharing.source_takeover(this),
        "partitioned_warm": lambda runs: sharing.partitioned_warm(this), "idle": lambda runs: idle(),
    }
    if args.against:
        compare(args.only, scenarios[args.only], args.against, args.runs)
        return
    results = {}
    for name, scenario in scenarios.items():
        if args.only and name != args.only:
            continue
        log(f"running {name}")
        results[name] = scenario(args.runs)
        log(f"{name}: {results[name]}")
    if args.only:
        print(json.dumps(results, indent=2, default=str))
        return
    text = report(results, args.runs)
    print(text)
    if not args.no_write:
        with open(os.path.join(ROOT, "docs", "BENCHMARKS.md"), "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
