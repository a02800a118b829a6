"""A full cache audit, the Python way: stream the job's query, render each row as the warm script does, MGET the
keys 1000 at a time and compare.

Usage: audit_all.py MYSQL_URL REDIS_URL QUERY KEY_PREFIX
Prints `checked wrong missing`.
"""
import json
import sys
from decimal import Decimal
from urllib.parse import urlparse

import pymysql
import redis

BATCH = 1000


def default(value):
    if isinstance(value, Decimal):
        return str(value)
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def main():
    mysql_url, redis_url, query, prefix = sys.argv[1:5]
    url = urlparse(mysql_url)
    db = pymysql.connect(host=url.hostname, port=url.port or 3306, user=url.username or "root",
                         password=url.password or "", database=url.path.lstrip("/"),
                         cursorclass=pymysql.cursors.SSDictCursor)
    r = redis.Redis.from_url(redis_url)
    cursor = db.cursor()
    cursor.execute(query)
    checked = wrong = missing = 0
    batch = []

    def compare():
        nonlocal checked, wrong, missing
        cached = r.mget([key for key, _ in batch])
        for (_, expected), value in zip(batch, cached):
            checked += 1
            if value is None:
                missing += 1
            elif json.loads(value) != expected:
                wrong += 1
        batch.clear()

    for row in cursor:
        batch.append((f'{prefix}{row["id"]}', json.loads(json.dumps(row, default=default))))
        if len(batch) == BATCH:
            compare()
    compare()
    print(checked, wrong, missing)


if __name__ == "__main__":
    main()
