"""Warm runs (`cachewarden run --once`): keys/s against plain Python doing the same job and Redis' own limit.

Imported by bench.py, which hands itself in as `h` (its helpers: config, warm_job, warm_million, timed, gnu_time,
cpu_split, r, flush, data_keys, ...).

Scenarios:
  warm_10k             10,000 demo products (~330-byte JSON values): cachewarden vs the seed's per-key SETEX loop
                       vs a pipelined Python script; limit: redis-benchmark -P 64 SET with the same value size. CPU
                       per key of cachewarden, MariaDB and Redis (with stale-set protection and without).
  warm_1m              1,000,000 rows: keys/s and peak RSS (GNU time), cachewarden (protected and not) and the
                       pipelined Python script.
  warm_1m_compressed   the same rows with a ~420-byte JSON description, zstd over COMPRESS_OVER bytes, against the
                       job uncompressed and the pipelined script compressing with the zstandard package: keys/s, bytes
                       stored per key, Redis used memory.
"""
import os
import statistics
import subprocess
import sys


def value_size(h):
    h.flush()
    cfg = h.config(h.warm_job("p", h.PRODUCTS_QUERY + " LIMIT 100", "bench:p:", h.JSON_ATTRIBUTES))
    subprocess.run([h.BIN, "run", "--once", "--config", cfg], check=True, capture_output=True)
    sizes = [len(h.r().get(k)) for k in h.r().scan_iter("bench:p:*")]
    h.flush()
    return int(statistics.mean(sizes))


def warm_10k(h, runs):
    size = value_size(h)
    job = h.warm_job("products", h.PRODUCTS_QUERY, "bench:p:", h.JSON_ATTRIBUTES)
    cfg, unprotected = h.config(job), h.config(job, protection=False)
    py = os.path.join(sys.prefix, "bin", "python")
    results = {"cachewarden": [], "python_setex": [], "python_pipelined": [], "redis_benchmark": []}
    for _ in range(runs):
        h.flush()
        seconds, _ = h.timed([h.BIN, "run", "--once", "--config", cfg])
        assert h.data_keys() == 10_000
        results["cachewarden"].append(10_000 / seconds)
        # Where the time goes: CPU per key of each process, over 10 more runs (the keys are simply rewritten).
        wall, split = h.cpu_split([h.BIN, "run", "--once", "--config", cfg], 10)
        for name, seconds in split.items():
            results.setdefault(f"cpu_us_per_key_{name}", []).append(seconds / 10_000 * 1e6)
        results.setdefault("wall_us_per_key", []).append(wall / 10_000 * 1e6)
        _, split = h.cpu_split([h.BIN, "run", "--once", "--config", unprotected], 10)
        results.setdefault("cpu_us_per_key_redis_unprotected", []).append(split["redis"] / 10_000 * 1e6)
        for name, script in (("python_setex", "warm_setex.py"), ("python_pipelined", "warm_pipelined.py")):
            h.flush()
            seconds, out = h.timed([py, os.path.join(h.BASELINES, script), h.MYSQL_URL, h.REDIS_URL,
                                    h.PRODUCTS_QUERY, "bench:p:", "600"])
            assert int(out) == 10_000 and h.data_keys() == 10_000
            results[name].append(10_000 / seconds)
        h.flush()
        redis_pid = h.servers()["redis"][0]
        redis_before = h.process_cpu(redis_pid)
        out = subprocess.run(["redis-benchmark", "-h", "127.0.0.1", "-p", "6379", "--dbnum", str(h.REDIS_DB),
                              "-t", "set", "-n", "200000", "-P", "64", "-d", str(size), "-r", "10000", "--csv"],
                             check=True, capture_output=True, text=True).stdout
        rps = [line for line in out.splitlines() if line.startswith('"SET"')][0].split(",")[1]
        results["redis_benchmark"].append(float(rps.strip('"')))
        results.setdefault("cpu_us_per_key_redis_benchmark", []).append(
            (h.process_cpu(redis_pid) - redis_before) / 200_000 * 1e6)
    h.flush()
    return size, {k: statistics.median(v) for k, v in results.items()}


def warm_1m(h, runs):
    cw, cw_rss, plain, py_rate, py_rss = h.warm_million(runs, False, h.flush, h.data_keys)
    return {"cachewarden": cw, "cachewarden_rss": cw_rss, "cachewarden_unprotected": plain,
            "python_pipelined": py_rate, "python_rss": py_rss}


COMPRESSED_QUERY = ("SELECT id, name, price, category_id, updated_at,"
                    " REPEAT(CONCAT(name, ' ships from the warehouse in two days; '), 6) AS description FROM million")
COMPRESS_OVER = 256


def stored_sizes(h, prefix, sample=2000):
    """Mean stored and decoded (JSON) bytes per key over a sample of keys."""
    import zstandard
    decompressor = zstandard.ZstdDecompressor()
    stored, rendered = [], []
    for key in list(h.r().scan_iter(f"{prefix}*", count=5000))[:sample]:
        value = h.r().get(key)
        stored.append(len(value))
        rendered.append(len(decompressor.decompress(value)) if value[:4] == b"\x28\xb5\x2f\xfd" else len(value))
    return statistics.mean(stored), statistics.mean(rendered)


def warm_1m_compressed(h, runs):
    """1M rows of ~420 B JSON, zstd over 256 B, against the same job uncompressed and the pipelined Python script
    compressing with the zstandard package."""
    compressed = h.config(h.warm_job("million", COMPRESSED_QUERY, "bench:z:",
                                     f'compress = "zstd"\ncompress_over = "{COMPRESS_OVER}B"'))
    plain = h.config(h.warm_job("million", COMPRESSED_QUERY, "bench:z:"))
    py = os.path.join(sys.prefix, "bin", "python")
    cw, cw_rss, uncompressed = [], [], []
    for _ in range(runs):
        h.flush()
        seconds, rss = h.gnu_time([h.BIN, "run", "--once", "--config", compressed])
        assert h.data_keys() == 1_000_000
        cw.append(1_000_000 / seconds)
        cw_rss.append(rss)
    stored, rendered = stored_sizes(h, "bench:z:")
    used_compressed = h.r().info("memory")["used_memory"]
    for _ in range(runs):
        h.flush()
        seconds, _ = h.gnu_time([h.BIN, "run", "--once", "--config", plain])
        uncompressed.append(1_000_000 / seconds)
    used_plain = h.r().info("memory")["used_memory"]
    h.flush()
    seconds, _ = h.gnu_time([py, os.path.join(h.BASELINES, "warm_pipelined.py"), h.MYSQL_URL, h.REDIS_URL,
                             COMPRESSED_QUERY, "bench:z:", "600", "zstd", str(COMPRESS_OVER)])
    py_rate = 1_000_000 / seconds
    py_stored, _ = stored_sizes(h, "bench:z:")
    h.flush()
    return {"cachewarden": statistics.median(cw), "cachewarden_rss": max(cw_rss),
            "cachewarden_uncompressed": statistics.median(uncompressed), "python_zstd": py_rate,
            "stored_bytes_per_key": stored, "rendered_bytes_per_key": rendered, "python_stored_bytes_per_key": py_stored,
            "redis_used_mb_compressed": used_compressed / 2**20, "redis_used_mb_plain": used_plain / 2**20}
