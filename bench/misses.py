"""Misses filled by the daemon (`[misses]`, `fill_on_miss`).

Imported by bench.py, which hands itself in as `h` (its helpers: config, Daemon, metric, wait, mysql, r, flush, ...).

Scenario:
  miss_fill   a job over the 1,000,000-row `million` table with `fill_on_miss` (max_fills_per_second raised to
              1,000,000 to measure the ceiling): 100,000 distinct missing keys read in one pipelined burst; fills per
              second until every key is written, and the statements MariaDB ran per fill (Com_stmt_execute +
              Com_select, the daemon's own health checks included). Then 500 single misses, one at a time: miss →
              key written as the client sees it (GET, then OBJECT ENCODING until it is there: it makes no miss of
              its own), p50 / p99. Against a Python
              subscriber doing one SELECT and one SET per miss (20,000 of the burst, and the same 500 single
              misses).
"""
import os
import statistics
import subprocess
import sys
import tempfile
import time

BURST = 100_000
PYTHON_BURST = 20_000
SINGLES = 500
PREFIX = "bench:miss:"


def job(h):
    query = h.MILLION_QUERY
    return (f'[[warm]]\nname = "missed"\nschedule = "0 0 0 1 1 *"\nquery = "{query}"\n'
            f'refresh_query = "{query} WHERE id = :id"\nkey = "{PREFIX}{{id}}"\nttl = "10m"\nfill_on_miss = true\n')


def statements(h):
    with h.mysql().cursor() as c:
        c.execute("SHOW GLOBAL STATUS WHERE Variable_name IN ('Com_stmt_execute', 'Com_select')")
        return sum(int(value) for _, value in c.fetchall())


def burst(ids):
    work = tempfile.mkdtemp(prefix="cwbench")
    path = os.path.join(work, "get.resp")
    with open(path, "w") as f:
        for i in ids:
            f.write(f"*2\r\n$3\r\nGET\r\n${len(PREFIX + str(i))}\r\n{PREFIX}{i}\r\n")
    return path


def there(r, key):
    """Whether `key` exists, asked without a miss of its own (OBJECT does not notify; EXISTS and GET would)."""
    return r.object("encoding", key) is not None


def singles(h, first_id):
    """Misses one at a time: the client's time from its GET to the key being there, in ms."""
    r = h.r()
    latencies = []
    for i in range(first_id, first_id + SINGLES):
        key = f"{PREFIX}{i}"
        start = time.monotonic()
        assert r.get(key) is None
        while not there(r, key):
            if time.monotonic() - start > 5:
                raise RuntimeError(f"{key} was never filled")
            time.sleep(0.0002)
        latencies.append((time.monotonic() - start) * 1000)
    return latencies


def miss_fill(h, runs):
    r = h.r()
    rates, per_fill, p50s, p99s = [], [], [], []
    cfg = h.config('[channel]\nenabled = false\n\n[misses]\nenabled = true\nmax_fills_per_second = 1000000\n\n'
                   + job(h))
    resp = burst(range(1, BURST + 1))
    try:
        for _ in range(runs):
            h.flush()
            daemon = h.Daemon(cfg)
            if not h.wait(lambda: h.metric("cachewarden_cache_misses_reported") == 1.0, 10, 0.01):
                raise RuntimeError("the daemon does not follow key misses")
            before = statements(h)
            start = time.monotonic()
            h.pipe(resp)
            written = 'cachewarden_cache_fills_total{outcome="written"}'
            if not h.wait(lambda: h.metric(written) >= BURST, 300, 0.01):
                raise RuntimeError(f"only {h.metric(written)} of {BURST} keys filled")
            rates.append(BURST / (time.monotonic() - start))
            per_fill.append((statements(h) - before) / BURST)
            latencies = singles(h, BURST + 1)
            p50s.append(h.percentile(latencies, 50))
            p99s.append(h.percentile(latencies, 99))
            daemon.stop()
        # The Python subscriber: a smaller burst (it is much slower), then the same single misses.
        h.flush()
        work = tempfile.mkdtemp(prefix="cwbench")
        ready = os.path.join(work, "ready")
        py = os.path.join(sys.prefix, "bin", "python")
        sub = subprocess.Popen([py, os.path.join(h.BASELINES, "fill_on_miss.py"), h.REDIS_URL, h.MYSQL_URL,
                                str(h.REDIS_DB), PREFIX, str(PYTHON_BURST + SINGLES), ready],
                               stdout=subprocess.PIPE, text=True)
        h.wait(lambda: os.path.exists(ready), 10, 0.01)
        start = time.monotonic()
        h.pipe(burst(range(1, PYTHON_BURST + 1)))
        # It fills in the order of the misses: the last key of the burst is its last fill.
        if not h.wait(lambda: there(r, f"{PREFIX}{PYTHON_BURST}"), 300, 0.01):
            raise RuntimeError("the Python subscriber did not fill the burst")
        python_rate = PYTHON_BURST / (time.monotonic() - start)
        latencies = singles(h, BURST + 1)
        sub.communicate(timeout=600)
    finally:
        # The shared test Redis goes back to publishing nothing.
        r.config_set("notify-keyspace-events", "")
        h.flush()
    return {"fills_per_s": statistics.median(rates), "statements_per_fill": statistics.median(per_fill),
            "single_p50_ms": statistics.median(p50s), "single_p99_ms": statistics.median(p99s),
            "python_fills_per_s": python_rate, "python_single_p50_ms": h.percentile(latencies, 50),
            "python_single_p99_ms": h.percentile(latencies, 99), "burst": BURST, "python_burst": PYTHON_BURST}
