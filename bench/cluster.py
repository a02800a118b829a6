"""Redis Cluster: the warm, binlog and channel figures against a cluster instead of the single node, and a slot
migration under load.

Imported by bench.py, which hands itself in as `h` (its helpers: config, Daemon, metric, wait, mysql, r, flush, rc,
flush_cluster, warm_million, ...).

Scenarios:
  cluster          the 3-master Redis Cluster from scripts/services (FLUSHALLed: the bench never runs beside the
                   tests): warm 1M (protected and not) vs the pipelined Python script on redis-py's RedisCluster, and
                   binlog catch-up in delete mode vs the python-mysql-replication invalidator, beside the single-node
                   figures; then the same cachewarden figures on a masters-only cluster started for the bench (see
                   BARE_CLUSTER_PORT), with cluster_channel.
  cluster_channel  channel deletes (200,000 one-key messages, PUBLISHed; then XADDed to a stream channel) and one
                   pattern delete over 200,000 keys on the masters-only cluster, beside the single node.
  cluster_reshard  RESHARD_SLOTS (2,000) slots migrated during a warm of 1M rows and during a binlog catch-up, on a
                   fresh masters-only cluster each: the longest stall beside the same run without a migration, and
                   keys lost.
"""
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

import redis


def cluster_keys(h, pattern, url=None):
    """Keys matching `pattern` on every master of the cluster at `url` (the shared one by default)."""
    return sum(1 for _ in h.rc(url or h.CLUSTER_URL).scan_iter(match=pattern, count=10_000))


# A cluster of 3 masters and no replica, started for the bench on its own ports: the shared cluster's replicas apply
# every write again on the same two cores, which the single node (no replica) does not; this one does the same Redis
# work as the single node, spread over three processes.
BARE_CLUSTER_PORT = 7301


def backlog_on_cluster(h, url, n):
    """Keys bench:c:1..n on the cluster at `url`, a backlog of n row changes in the binlog after a checkpoint saved
    there; returns a function of a server_id giving a config whose delete rule catches up on that backlog."""
    pipe = h.rc(url).pipeline(transaction=False)
    for i in range(1, n + 1):
        pipe.set(f"bench:c:{i}", "1")
    pipe.execute()
    file, pos = h.master_status()
    h.churn(n, 100)
    h.rc(url).set("bench:checkpoint", f"{file}:{pos}")
    return lambda server_id: h.config(f'[channel]\nenabled = false\n\n[binlog]\nserver_id = {server_id}\n'
                                      f'checkpoint_key = "bench:checkpoint"\nheartbeat = "1s"\non_gap = "none"\n\n'
                                      f'[[on_change]]\ntable = "{h.DATABASE}.churn"\ndelete = ["bench:c:{{id}}"]\n',
                                      cluster=url)


def catch_up_on_cluster(h, runs, url, server_id):
    """Binlog catch-up in delete mode over a 100,000-row backlog on the cluster at `url`: row events/s, median."""
    n = 100_000
    rates = []
    for run in range(runs):
        h.flush_cluster(url)
        cfg = backlog_on_cluster(h, url, n)
        start = time.monotonic()
        daemon = h.Daemon(cfg(server_id + run))
        done = h.wait(lambda: h.deleted() >= n, 120, 0.005)
        rates.append(n / (time.monotonic() - start) if done else 0.0)
        daemon.stop()
    h.flush_cluster(url)
    return statistics.median(rates)


def channel_deletes(h, runs, cluster_url=None, n=200_000, stream=False):
    """Deletes through the channel against the single node, or the cluster at `cluster_url`: n one-key messages
    (messages/s until every key is deleted), then one `{"patterns": ["bench:p:*"]}` message over n keys (keys/s until
    the pattern delete is done); medians. Protection on, as in every deployment by default. The messages are
    PUBLISHed to the pub/sub channel, or with `stream` XADDed to a stream read by a consumer group."""
    work = tempfile.mkdtemp(prefix="cwbench")
    pubs, pattern = os.path.join(work, "pub.resp"), os.path.join(work, "pattern.resp")
    send = (lambda text: h.resp("XADD", "bench_stream", "*", "message", text)) if stream else (
        lambda text: h.resp("PUBLISH", "bench_inv", text))
    h.write_resp(pubs, (send(f"bench:i:{i}") for i in range(n)))
    h.write_resp(pattern, [send('{"patterns": ["bench:p:*"]}')])
    if cluster_url:
        # PUBLISH goes to any node (the cluster bus carries it to every other); XADD to the stream's own master.
        port = urllib.parse.urlparse(cluster_url).port
        if stream:
            client = h.rc(cluster_url)
            port = client.nodes_manager.get_node_from_slot(client.keyslot("bench_stream")).port
        publish = lambda path: subprocess.run(["redis-cli", "-p", str(port), "--pipe"], stdin=open(path), check=True,
                                              capture_output=True)

        def fill(prefix):
            p = h.rc(cluster_url).pipeline(transaction=False)
            for i in range(n):
                p.set(f"{prefix}{i}", "1")
            p.execute()
        wipe = lambda: h.flush_cluster(cluster_url)
    else:
        publish = h.pipe
        sets = {prefix: os.path.join(work, f"{prefix[6]}.resp") for prefix in ("bench:i:", "bench:p:")}
        for prefix, path in sets.items():
            h.write_resp(path, (h.resp("SET", f"{prefix}{i}", "1") for i in range(n)))
        fill = lambda prefix: h.pipe(sets[prefix])
        wipe = h.flush
    source = 'stream = "bench_stream"\ngroup = "cw"\nconsumer = "bench"\n' if stream else ""
    cfg = h.config(f'[channel]\nname = "bench_inv"\n{source}allow = ["bench:i:*", "bench:p:*"]\n\n',
                   cluster=cluster_url or False)
    messages, patterns = [], []
    for _ in range(runs):
        wipe()
        fill("bench:i:")
        fill("bench:p:")
        daemon = h.Daemon(cfg)
        start = time.monotonic()
        publish(pubs)
        done = h.wait(lambda: h.deleted() >= n, 120, 0.01)
        messages.append(n / (time.monotonic() - start) if done else 0.0)
        start = time.monotonic()
        publish(pattern)
        done = h.wait(lambda: h.metric('cachewarden_invalidated_keys_total{action="pattern_delete"}') >= n, 120, 0.005)
        patterns.append(n / (time.monotonic() - start) if done else 0.0)
        daemon.stop()
    wipe()
    shutil.rmtree(work, ignore_errors=True)
    return statistics.median(messages), statistics.median(patterns)


@contextlib.contextmanager
def bare_cluster(h):
    """A cluster of 3 masters without replicas on BARE_CLUSTER_PORT.., started for the bench and stopped after; its URL."""
    scripts = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts", "redis-cluster")
    nodes = tempfile.mkdtemp(prefix="cwbench-cluster")
    subprocess.run([scripts, "start", str(BARE_CLUSTER_PORT), "3", "0", nodes], check=True, capture_output=True)
    try:
        url = f"redis://127.0.0.1:{BARE_CLUSTER_PORT}"
        h.flush_cluster(url)
        yield url
    finally:
        subprocess.run([scripts, "stop", str(BARE_CLUSTER_PORT), "3", nodes], check=False)
        shutil.rmtree(nodes, ignore_errors=True)


def cluster_channel(h, runs, url=None):
    """Channel deletes on the masters-only cluster at `url` (started here without one) and on the single node, the
    same hour."""
    if url is None:
        with bare_cluster(h) as url:
            return cluster_channel(h, runs, url)
    messages, patterns = channel_deletes(h, runs, url)
    single_messages, single_patterns = channel_deletes(h, runs)
    streamed, _ = channel_deletes(h, runs, url, stream=True)
    single_streamed, _ = channel_deletes(h, runs, stream=True)
    return {"bare_pubsub": messages, "bare_pattern": patterns, "single_pubsub": single_messages,
            "single_pattern": single_patterns, "bare_stream": streamed, "single_stream": single_streamed}


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


def cluster_reshard(h, runs):
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
        with bare_cluster(h) as url:
            count = masters_keys(url)
            cfg = h.config(h.warm_job("million", h.MILLION_QUERY, "bench:m:"), cluster=url)
            run = subprocess.Popen([h.BIN, "run", "--once", "--config", cfg], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
            moving = []
            start = migrate_once_past(url, 100_000, moving) if resharding else (lambda value: None)
            stall = longest_stall(count, lambda: run.poll() is not None, start)
            run.wait()
            for process in moving:
                process.wait(timeout=300)
            return stall, 1_000_000 - cluster_keys(h, "bench:m:*", url), bool(moving)

    def catch_up(resharding, server_id):
        n = 100_000
        with bare_cluster(h) as url:
            daemon = h.Daemon(backlog_on_cluster(h, url, n)(server_id))
            moving = []
            start = migrate_once_past(url, 10_000, moving) if resharding else (lambda value: None)
            stall = longest_stall(h.deleted, lambda: h.deleted() >= n, start, 0.005)
            for process in moving:
                process.wait(timeout=300)
            daemon.stop()
            return stall, cluster_keys(h, "bench:c:*", url), bool(moving)

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


def cluster(h, runs):
    """Warm 1M and binlog catch-up (delete mode) against the 3-master cluster, with the Python baselines there; then
    the same cachewarden figures on a cluster of 3 masters without replicas (see BARE_CLUSTER_PORT)."""
    warm, warm_rss, plain, py_warm, py_rss = h.warm_million(runs, True, h.flush_cluster,
                                                            lambda: cluster_keys(h, "bench:m:*"))
    py = os.path.join(sys.prefix, "bin", "python")
    catch_up = catch_up_on_cluster(h, runs, h.CLUSTER_URL, 9400)
    h.flush_cluster()
    file, pos = h.master_status()
    h.churn(100_000, 100)
    out = subprocess.run([py, os.path.join(h.BASELINES, "binlog_invalidator.py"), h.MYSQL_BASE,
                          "cluster+" + h.CLUSTER_URL, h.DATABASE, "churn", "bench:c:", file, str(pos), str(100_000),
                          "9500"],
                         check=True, capture_output=True, text=True, timeout=900).stdout
    rows, elapsed, _ = out.split()
    h.flush_cluster()
    figures = {"warm_1m": warm, "warm_1m_rss": warm_rss, "warm_1m_unprotected": plain,
               "python_warm_1m": py_warm, "python_rss": py_rss,
               "catch_up": catch_up, "python_catch_up": int(rows) / float(elapsed)}
    with bare_cluster(h) as url:
        bare, _, bare_plain, py_bare, _ = h.warm_million(runs, url, lambda: h.flush_cluster(url),
                                                         lambda: cluster_keys(h, "bench:m:*", url))
        figures.update({"bare_warm_1m": bare, "bare_warm_1m_unprotected": bare_plain, "python_bare_warm_1m": py_bare,
                        "bare_catch_up": catch_up_on_cluster(h, runs, url, 9450)})
        figures.update(cluster_channel(h, runs, url))
    return figures
