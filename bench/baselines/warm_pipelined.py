"""Cache warming, the better Python script: a streaming cursor and pipelined SETEX in batches of 1000.

Usage: warm_pipelined.py MYSQL_URL REDIS_URL QUERY KEY_PREFIX TTL_SECONDS
Prints the number of keys written.
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
    mysql_url, redis_url, query, prefix, ttl = sys.argv[1:6]
    url = urlparse(mysql_url)
    db = pymysql.connect(host=url.hostname, port=url.port or 3306, user=url.username or "root",
                         password=url.password or "", database=url.path.lstrip("/"),
                         cursorclass=pymysql.cursors.SSDictCursor)
    r = redis.Redis.from_url(redis_url)
    cursor = db.cursor()
    cursor.execute(query)
    pipe = r.pipeline(transaction=False)
    count = 0
    for row in cursor:
        pipe.setex(f'{prefix}{row["id"]}', int(ttl), json.dumps(row, default=default))
        count += 1
        if count % BATCH == 0:
            pipe.execute()
    pipe.execute()
    print(count)


if __name__ == "__main__":
    main()
