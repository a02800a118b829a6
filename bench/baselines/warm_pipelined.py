"""Cache warming, the better Python script: a streaming cursor and pipelined SETEX in batches of 1000.

Usage: warm_pipelined.py MYSQL_URL REDIS_URL QUERY KEY_PREFIX TTL_SECONDS [zstd COMPRESS_OVER]
A REDIS_URL written `cluster+redis://host:port` is a Redis Cluster seed (redis-py's RedisCluster, whose
pipelines are split by node). With `zstd N`, values over N bytes are stored as zstd frames (level 3), as cachewarden's `compress = "zstd"` does.
Prints the number of keys written.
"""
import json
import sys
from decimal import Decimal
from urllib.parse import urlparse

import pymysql
import redis
import redis.cluster

BATCH = 1000


def default(value):
    if isinstance(value, Decimal):
        return str(value)
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def connect(redis_url):
    """redis-py's client for REDIS_URL; `cluster+redis://…` for a Redis Cluster."""
    if redis_url.startswith("cluster+"):
        return redis.cluster.RedisCluster.from_url(redis_url[len("cluster+"):])
    return redis.Redis.from_url(redis_url)


def main():
    mysql_url, redis_url, query, prefix, ttl = sys.argv[1:6]
    compress_over = int(sys.argv[7]) if len(sys.argv) > 7 and sys.argv[6] == "zstd" else None
    if compress_over is not None:
        import zstandard
        compressor = zstandard.ZstdCompressor(level=3)
    url = urlparse(mysql_url)
    db = pymysql.connect(host=url.hostname, port=url.port or 3306, user=url.username or "root",
                         password=url.password or "", database=url.path.lstrip("/"),
                         cursorclass=pymysql.cursors.SSDictCursor)
    r = connect(redis_url)
    cursor = db.cursor()
    cursor.execute(query)
    pipe = r.pipeline(transaction=False)
    count = 0
    for row in cursor:
        value = json.dumps(row, default=default).encode()
        if compress_over is not None and len(value) > compress_over:
            compressed = compressor.compress(value)
            value = compressed if len(compressed) < len(value) else value
        pipe.setex(f'{prefix}{row["id"]}', int(ttl), value)
        count += 1
        if count % BATCH == 0:
            pipe.execute()
    pipe.execute()
    print(count)


if __name__ == "__main__":
    main()
