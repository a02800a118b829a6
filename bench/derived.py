"""Invalidation derived from the SQL: a join job's keys kept right from a joined table's changes.

Imported by bench.py, which hands itself in as `h` (its helpers: config, Daemon, metric, wait, mysql, r, flush, ...).

Scenario:
  join_storm   a job of 100,000 products with their category's name (1,000 categories, 100 products each),
               `derive_rules = true` and no [[on_change]]: 100 categories renamed, one transaction each, as fast as
               the server takes them. Time from the last commit until every affected key (10,000) shows its new name,
               keys touched per change (what the derived lookups found), MariaDB's CPU for the lookups and
               refreshes; against re-warming the whole job (`run --once`: what `warm = ["job"]` costs per change),
               and against the Python join refresher (python-mysql-replication, SELECT through the join and a
               pipelined SET per category) over the same renames. Each is measured on a quiet server (`quiet`):
               an earlier scenario's background work there is not this one's load.
"""
import json
import os
import statistics
import subprocess
import sys
import time

PRODUCTS = 100_000
CATEGORIES = 1_000
RENAMES = 100
PREFIX = "bench:dj:"
QUERY = ("SELECT p.id, p.name, c.name AS category FROM dj_products p JOIN dj_categories c ON c.id = p.category_id")


def setup(h):
    with h.mysql().cursor() as c:
        c.execute("CREATE TABLE IF NOT EXISTS dj_categories (id INT PRIMARY KEY, name VARCHAR(60) NOT NULL)")
        c.execute("CREATE TABLE IF NOT EXISTS dj_products (id INT PRIMARY KEY, category_id INT NOT NULL,"
                  " name VARCHAR(60) NOT NULL, KEY (category_id))")
        c.execute("SELECT COUNT(*) FROM dj_products")
        if c.fetchone()[0] != PRODUCTS:
            c.execute("TRUNCATE dj_products")
            c.execute("INSERT INTO dj_products SELECT seq, 1 + seq %% %s, CONCAT('Product ', seq)"
                      " FROM seq_1_to_100000", (CATEGORIES,))
        c.execute("DELETE FROM dj_categories")
        c.execute("INSERT INTO dj_categories SELECT seq, CONCAT('Category ', seq) FROM seq_1_to_1000")


def job():
    return (f'[[warm]]\nname = "dj"\nschedule = "0 0 0 1 1 *"\nquery = "{QUERY}"\n'
            f'refresh_query = "{QUERY} WHERE p.id = :id"\nkey = "{PREFIX}{{id}}"\nttl = "1h"\n')


def daemon_config(h, server_id):
    return h.config(f'[channel]\nenabled = false\n\n[binlog]\nserver_id = {server_id}\n'
                    f'checkpoint_key = "bench:checkpoint"\nheartbeat = "1s"\non_gap = "none"\nderive_rules = true\n\n'
                    f'{job()}')


def affected():
    """The product ids in the renamed categories (1..RENAMES), by category."""
    return {category: [pid for pid in range(category - 1 or CATEGORIES, PRODUCTS + 1, CATEGORIES)]
            for category in range(1, RENAMES + 1)}


def all_right(h, names, only=None):
    """Whether every affected key (of the category `only`, if given) holds its category's new name."""
    r = h.r()
    for category, ids in affected().items():
        if only is not None and category != only:
            continue
        values = r.mget([f"{PREFIX}{pid}" for pid in ids])
        for value in values:
            if value is None or json.loads(value)["category"] != names[category]:
                return False
    return True


def rename(h, run):
    names = {category: f"Category {category} renamed {run}" for category in range(1, RENAMES + 1)}
    with h.mysql().cursor() as c:
        for category, name in names.items():
            c.execute("UPDATE dj_categories SET name = %s WHERE id = %s", (name, category))
    return names, time.monotonic()


def storm_once(h, run):
    h.flush()
    setup(h)
    cfg = daemon_config(h, 9700 + run)
    subprocess.run([h.BIN, "run", "--once", "--config", cfg], check=True, capture_output=True)
    daemon = h.Daemon(cfg)
    h.quiet()
    before = h.metric('cachewarden_binlog_lookup_keys_total{warm_job="dj"}')
    pids = h.servers()
    maria_before = sum(h.process_cpu(pid) for pid in pids["mariadb"])
    names, committed = rename(h, run)
    # Polled cheaply on the last category renamed (changes are applied in commit order), then every key checked.
    done = h.wait(lambda: all_right(h, names, RENAMES), 120, 0.002)
    elapsed = time.monotonic() - committed
    done = done and h.wait(lambda: all_right(h, names), 10, 0.02)
    maria = sum(h.process_cpu(pid) for pid in pids["mariadb"]) - maria_before
    keys = h.metric('cachewarden_binlog_lookup_keys_total{warm_job="dj"}') - before
    daemon.stop()
    if not done:
        raise RuntimeError("join_storm: the renamed categories' keys were not all right within 120 s")
    return {"settled_ms": elapsed * 1000, "keys_per_change": keys / RENAMES, "mariadb_cpu_ms": maria * 1000}


def rewarm(h):
    """One re-warm of the whole job: its wall time and MariaDB's CPU."""
    cfg = h.config(job())
    h.quiet()
    wall, split = h.cpu_split([h.BIN, "run", "--once", "--config", cfg], 1)
    return wall, split["mariadb"]


def python_storm(h):
    """The Python join refresher following live, as the daemon does: last commit → last key written."""
    h.flush()
    setup(h)
    subprocess.run([h.BIN, "run", "--once", "--config", h.config(job())], check=True, capture_output=True)
    file, pos = h.master_status()
    py = os.path.join(sys.prefix, "bin", "python")
    follower = subprocess.Popen([py, os.path.join(h.BASELINES, "join_refresher.py"), h.MYSQL_BASE, h.REDIS_URL,
                                 h.DATABASE, PREFIX, file, str(pos), str(RENAMES), "9790"],
                                stdout=subprocess.PIPE, text=True)
    time.sleep(1)  # connected and waiting at the current position
    h.quiet()
    names, _ = rename(h, 99)
    committed = time.time()
    out, _ = follower.communicate(timeout=600)
    changes, keys, _, last = out.split()
    return {"python_settled_ms": (float(last) - committed) * 1000, "python_keys_per_change": int(keys) / int(changes),
            "python_right": all_right(h, names)}


def join_storm(h, runs):
    results = [storm_once(h, run) for run in range(runs)]
    wall, maria = rewarm(h)
    python = python_storm(h)
    h.flush()
    med = lambda field: statistics.median(run[field] for run in results)  # noqa: E731
    return {"renames": RENAMES, "keys": RENAMES * PRODUCTS // CATEGORIES, "settled_ms": med("settled_ms"),
            "settled_worst_ms": max(run["settled_ms"] for run in results),
            "keys_per_change": med("keys_per_change"), "mariadb_cpu_ms": med("mariadb_cpu_ms"),
            "rewarm_ms": wall * 1000, "rewarm_mariadb_cpu_ms": maria * 1000, **python}
