"""The top N kept the way a team writes it without change data capture: a loop that runs the top-N query every second
and replaces the sorted set in one MULTI (DEL + ZADD), so a reader never sees it half written.

Usage: top_n_loop.py MYSQL_URL REDIS_URL SCHEMA KEY QUERY
Runs until terminated. The query returns (member, score) rows.
"""
import signal
import sys
import time
from urllib.parse import urlparse

import pymysql
import redis


def main():
    mysql_url, redis_url, schema, key, query = sys.argv[1:6]
    url = urlparse(mysql_url)
    db = pymysql.connect(host=url.hostname, port=url.port or 3306, user=url.username or "root",
                         password=url.password or "", database=schema, autocommit=True)
    r = redis.Redis.from_url(redis_url)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        started = time.monotonic()
        with db.cursor() as c:
            c.execute(query)
            rows = c.fetchall()
        pipe = r.pipeline(transaction=True)
        pipe.delete(key)
        if rows:
            pipe.zadd(key, {str(member): float(score) for member, score in rows})
        pipe.expire(key, 3600)
        pipe.execute()
        time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))


if __name__ == "__main__":
    main()
