"""The binlog, in delete mode and from the row image: a backlog caught up on, and bursts while following.

Imported by bench.py, which hands itself in as `h` (its helpers: config, Daemon, metric, wait, mysql, r, flush,
master_status, churn, own_mariadb, ...).

Scenario:
  binlog   delete mode: catch-up over a 100,000-row backlog (100 transactions over the churn table) from a checkpoint,
           cachewarden vs a python-mysql-replication invalidator; live: LIVE_BURSTS 10,000-row update bursts per run
           while following, time from the last commit to the last key deleted (and from each transaction's commit to
           its last key deleted), against the invalidator over one burst. Then the same backlog refreshed from the
           row image (a projection rule), and caught up on with MariaDB's log_bin_compress on and off (a MariaDB of
           the bench's own started each way: row events/s and the binlog bytes of the backlog).
"""
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import pymysql

LIVE_BURSTS = 5  # per run


def live_burst(h, rows, transactions):
    """While a daemon follows the binlog: updates `rows` rows in `transactions` transactions and watches the
    daemon's delete counter. Returns the lag of each transaction, commit to its last key deleted (seconds)."""
    create_churn_keys(h, rows)
    base, per_txn = h.deleted(), rows // transactions
    seen = {}

    def watch():
        deadline = time.monotonic() + 60
        while len(seen) < transactions and time.monotonic() < deadline:
            count, now = h.deleted(), time.monotonic()
            for t in range(transactions):
                if t not in seen and count >= base + (t + 1) * per_txn:
                    seen[t] = now
            time.sleep(0.0005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    commits = h.churn(rows, transactions)
    watcher.join()
    if len(seen) < transactions:
        raise RuntimeError(f"only {len(seen)} of {transactions} transactions were invalidated within 60 s")
    return [seen[t] - commits[t] for t in range(transactions)]


def binlog_config(h, server_id, project=False):
    if project:
        rule = (f'[[on_change]]\ntable = "{h.DATABASE}.churn"\n'
                'project = { key = "bench:c:{id}", columns = ["id", "v"], ttl = "10m" }\n')
    else:
        rule = f'[[on_change]]\ntable = "{h.DATABASE}.churn"\ndelete = ["bench:c:{{id}}"]\n'
    return h.config(f'[channel]\nenabled = false\n\n[binlog]\nserver_id = {server_id}\n'
                    f'checkpoint_key = "bench:checkpoint"\nheartbeat = "1s"\non_gap = "none"\n\n{rule}')


def create_churn_keys(h, count):
    work = tempfile.mkdtemp(prefix="cwbench")
    path = os.path.join(work, "keys.resp")
    h.write_resp(path, (h.resp("SET", f"bench:c:{i}", "1") for i in range(1, count + 1)))
    h.pipe(path)


def binlog(h, runs):
    n = 100_000
    catch_up, live, live_txn = [], [], []
    py = os.path.join(sys.prefix, "bin", "python")
    for run in range(runs):
        # Catch-up: a backlog of n row events (100 transactions) replayed from a checkpoint.
        h.flush()
        create_churn_keys(h, n)
        file, pos = h.master_status()
        h.churn(n, 100)
        h.r().set("bench:checkpoint", f"{file}:{pos}")
        start = time.monotonic()
        daemon = h.Daemon(binlog_config(h, 9000 + run))
        done = h.wait(lambda: h.deleted() >= n, 120, 0.005)
        catch_up.append(n / (time.monotonic() - start) if done else 0.0)
        # Live: bursts of 10,000 rows in 10 transactions while following. Per burst, the lag from the last commit
        # to the last key deleted; per transaction, from its commit to its last key deleted.
        for _ in range(LIVE_BURSTS):
            lags = live_burst(h, 10_000, 10)
            live.append(lags[-1])
            live_txn.extend(lags)
        daemon.stop()
    # Catch-up in refresh-from-row-image mode: the same backlog, each row written as a projection.
    projected = []
    for run in range(runs):
        h.flush()
        file, pos = h.master_status()
        h.churn(n, 100)
        h.r().set("bench:checkpoint", f"{file}:{pos}")
        start = time.monotonic()
        daemon = h.Daemon(binlog_config(h, 9300 + run, project=True))
        done = h.wait(lambda: h.metric('cachewarden_invalidated_keys_total{action="project"}') >= n, 120, 0.005)
        projected.append(n / (time.monotonic() - start) if done else 0.0)
        daemon.stop()
    # Catch-up with MariaDB's binlog compression on (log_bin_compress, zlib row events) beside off: the same backlog
    # on a MariaDB of the bench's own started each way, and the binlog bytes the backlog took. (MariaDB decides per
    # event by the size of its first row: the churn rows are small, so the threshold goes down to 10 bytes.)
    compression = {flag: compressed_catch_up(h, n, runs, flag) for flag in (False, True)}
    # The Python invalidator: catch-up over the same backlog, then live lag over a 10k-row burst.
    h.flush()
    create_churn_keys(h, n)
    file, pos = h.master_status()
    h.churn(n, 100)
    out = subprocess.run([py, os.path.join(h.BASELINES, "binlog_invalidator.py"), h.MYSQL_BASE, h.REDIS_URL,
                          h.DATABASE, "churn", "bench:c:", file, str(pos), str(n), "9100"],
                         check=True, capture_output=True, text=True, timeout=900).stdout
    rows, elapsed, _ = out.split()
    h.flush()
    create_churn_keys(h, 10_000)
    file, pos = h.master_status()
    live_py = subprocess.Popen([py, os.path.join(h.BASELINES, "binlog_invalidator.py"), h.MYSQL_BASE, h.REDIS_URL,
                                h.DATABASE, "churn", "bench:c:", file, str(pos), "10000", "9101"],
                               stdout=subprocess.PIPE, text=True)
    time.sleep(1)  # connected and waiting at the current position
    h.churn(10_000, 10)
    committed_at = time.time()
    out, _ = live_py.communicate(timeout=600)
    py_lag = float(out.split()[2]) - committed_at
    h.flush()
    return {"catch_up": statistics.median(catch_up), "live_lag_ms": statistics.median(live) * 1000,
            "live_lag_p99_ms": h.percentile(live, 99) * 1000, "live_bursts": len(live),
            "live_txn_lag_p50_ms": h.percentile(live_txn, 50) * 1000,
            "live_txn_lag_p99_ms": h.percentile(live_txn, 99) * 1000, "live_txns": len(live_txn),
            "python": int(rows) / float(elapsed),
            "project_catch_up": statistics.median(projected), "python_live_lag_ms": py_lag * 1000,
            "compressed_off_catch_up": compression[False][0], "compressed_catch_up": compression[True][0],
            "binlog_bytes_off": compression[False][1], "binlog_bytes_on": compression[True][1]}


def compressed_catch_up(h, n, runs, compress):
    """Binlog catch-up over a backlog of `n` row events on a MariaDB of the bench's own, with log_bin_compress on or
    off: (median row events/s, binlog bytes of the backlog)."""
    process, base, work = h.own_mariadb(["--log-bin-compress", "--log-bin-compress-min-len=10"] if compress else [])
    port = int(base.rsplit(":", 1)[1])
    try:
        db = pymysql.connect(host="127.0.0.1", port=port, user="root", password="", autocommit=True)
        with db.cursor() as c:
            c.execute(f"CREATE DATABASE {h.DATABASE}")
            c.execute(f"USE {h.DATABASE}")
            c.execute("CREATE TABLE churn (id INT PRIMARY KEY, v INT)")
            c.execute(f"INSERT INTO churn SELECT seq, 0 FROM seq_1_to_{n}")
        rates, size = [], None
        for run in range(runs):
            h.flush()
            create_churn_keys(h, n)
            with db.cursor() as c:
                c.execute("SHOW MASTER STATUS")
                file, pos = c.fetchone()[:2]
                step = n // 100
                for t in range(100):
                    c.execute(f"UPDATE {h.DATABASE}.churn SET v = v + 1 WHERE id > %s AND id <= %s",
                              (t * step, (t + 1) * step))
                c.execute("SHOW MASTER STATUS")
                end_file, end = c.fetchone()[:2]
                if compress:
                    c.execute(f"SHOW BINLOG EVENTS IN '{file}' FROM {pos} LIMIT 20")
                    if not any("compressed" in row[2].lower() for row in c.fetchall()):
                        raise RuntimeError("log_bin_compress is on but the row events are not compressed")
            size = int(end) - int(pos) if end_file == file else None
            h.r().set("bench:checkpoint", f"{file}:{pos}")
            path = h.rewrite(binlog_config(h, 9350 + run + 10 * compress), h.MYSQL_URL, f"{base}/{h.DATABASE}")
            start = time.monotonic()
            daemon = h.Daemon(path)
            done = h.wait(lambda: h.deleted() >= n, 120, 0.005)
            rates.append(n / (time.monotonic() - start) if done else 0.0)
            daemon.stop()
        h.flush()
        return statistics.median(rates), size
    finally:
        process.terminate()
        process.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)
