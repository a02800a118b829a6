"""End-to-end benchmarks: cachewarden against plain Python doing the same job, and against Redis' own limit.

Run through scripts/bench (it builds, starts services and prepares the venv). Every scenario runs --runs times
(default 3); the report gives medians and ratios, and is written to docs/BENCHMARKS.md. `--only NAME --against
BINARY` runs one scenario with this build and another in turn (a regression check between two commits). Both
tables are written by bench/report.py.

Scenarios:
  warm-10k   10,000 demo products (~330-byte JSON values): cachewarden run --once vs the seed's per-key SETEX
             loop vs a pipelined Python script; limit: redis-benchmark -P 64 SET with the same value size.
  warm-1m    1,000,000 rows: keys/s and peak RSS (GNU time), cachewarden and the pipelined Python script.
  warm_1m_compressed  the same rows with a ~420-byte JSON value, zstd over 256 bytes. These three: see
             bench/warming.py.
  pubsub     single-key invalidations published in one burst: cachewarden (1,000,000, counted lost) vs the seed's
             subscriber doing one DEL per message (200,000); the daemon's peak RSS after the burst and after 200
             hostile 1 MB messages.
  binlog     delete mode: catch-up over a 100,000-row backlog from a checkpoint, cachewarden vs a
             python-mysql-replication invalidator; and live: a 10,000-row update burst, time from the last commit to
             the last key deleted: see bench/binlog.py.
  cluster    the 3-master Redis Cluster from scripts/services: warm 1M and binlog catch-up against the Python
             baselines there, beside the single-node figures, then on a masters-only cluster: see bench/cluster.py.
  cluster_channel, cluster_reshard   pub/sub and pattern deletes, and 2,000 slots migrated under load, on the
             masters-only cluster: see bench/cluster.py.
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
import json
import math
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import pymysql
import redis
import redis.cluster

import binlog
import cdc
import cluster
import derived
import misses
import report
import shapes
import sharing
import warming

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
    """A client of the cluster at `url` (the shared one by default): for ha_takeover here and bench/cluster.py."""
    return redis.cluster.RedisCluster.from_url(url)


def flush_cluster(url=CLUSTER_URL):
    """Empties the cluster, as one cachewarden has used before: the read leases' set keeps its sentinel, so no phantom
    lease (which a fresh or flushed cluster starts with: an hour of invalidations through slot scripts, see
    exec::cache::cluster::guard) weighs on the steady-state figures."""
    rc(url).flushall(target_nodes=redis.cluster.RedisCluster.PRIMARIES)
    rc(url).zadd("cachewarden:{cachewarden}:readers", {"~": float("inf")})


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
        "warm_10k": lambda runs: warming.warm_10k(this, runs), "warm_1m": lambda runs: warming.warm_1m(this, runs),
        "warm_1m_compressed": lambda runs: warming.warm_1m_compressed(this, runs), "pubsub": pubsub,
        "binlog": lambda runs: binlog.binlog(this, runs), "cdc_single_row": lambda runs: cdc.single_row(this, runs),
        "cdc_storm": lambda runs: cdc.storm(this, runs), "reader_lag": lambda runs: cdc.reader_lag(this, runs),
        "join_storm": lambda runs: derived.join_storm(this, runs), "audit_all": audit_all,
        "miss_fill": lambda runs: misses.miss_fill(this, runs), "cluster": lambda runs: cluster.cluster(this, runs),
        "cluster_channel": lambda runs: cluster.cluster_channel(this, runs),
        "cluster_reshard": lambda runs: cluster.cluster_reshard(this, runs),
        "top_n": lambda runs: shapes.top_n(this, runs), "hash_update": lambda runs: shapes.hash_update(this, runs),
        "ha_takeover": lambda runs: ha_takeover(),
        "source_takeover": lambda runs: sharing.source_takeover(this),
        "partitioned_warm": lambda runs: sharing.partitioned_warm(this), "idle": lambda runs: idle(),
    }
    if args.against:
        report.compare(this, args.only, scenarios[args.only], args.against, args.runs)
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
    text = report.report(this, results, args.runs)
    print(text)
    if not args.no_write:
        with open(os.path.join(ROOT, "docs", "BENCHMARKS.md"), "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
