"""A binlog invalidator in plain Python: python-mysql-replication, one DEL per changed row.

Usage: binlog_invalidator.py MYSQL_URL REDIS_URL SCHEMA TABLE KEY_PREFIX LOG_FILE LOG_POS COUNT SERVER_ID
Reads row events from LOG_FILE:LOG_POS and deletes KEY_PREFIX{id} for each changed row; after COUNT rows prints
`rows elapsed_seconds last_unix_time` (from the first row event to the last; the wall-clock time of the last
delete, for measuring lag from a commit). A REDIS_URL written `cluster+redis://host:port` is a Redis Cluster seed.
"""
import sys
import time
from urllib.parse import urlparse

import redis
import redis.cluster
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent


def connect(redis_url):
    """redis-py's client for REDIS_URL; `cluster+redis://…` for a Redis Cluster."""
    if redis_url.startswith("cluster+"):
        return redis.cluster.RedisCluster.from_url(redis_url[len("cluster+"):])
    return redis.Redis.from_url(redis_url)


def main():
    mysql_url, redis_url, schema, table, prefix, log_file, log_pos, count, server_id = sys.argv[1:10]
    url = urlparse(mysql_url)
    settings = {"host": url.hostname, "port": url.port or 3306, "user": url.username or "root",
                "passwd": url.password or ""}
    r = connect(redis_url)
    stream = BinLogStreamReader(connection_settings=settings, server_id=int(server_id), blocking=True,
                                resume_stream=True, log_file=log_file, log_pos=int(log_pos),
                                only_events=[WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent],
                                only_schemas=[schema], only_tables=[table])
    rows, first, last = 0, None, None
    target = int(count)
    for event in stream:
        for row in event.rows:
            values = row.get("after_values") or row.get("values")
            if first is None:
                first = time.monotonic()
            r.delete(f"{prefix}{values['id']}")
            rows += 1
            last = time.monotonic()
        if rows >= target:
            break
    stream.close()
    print(rows, (last - first) if first else 0.0, time.time())


if __name__ == "__main__":
    main()
