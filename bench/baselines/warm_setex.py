"""Cache warming the way the seed writes it: PyMySQL + redis-py, one SETEX per row.

Usage: warm_setex.py MYSQL_URL REDIS_URL QUERY KEY_PREFIX TTL_SECONDS
Prints the number of keys written.
"""
import json
import sys
from decimal import Decimal
from urllib.parse import urlparse

import pymysql
import redis


def default(value):
    if isinstance(value, Decimal):
        return str(value)
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def main():
    mysql_url, redis_url, query, prefix, ttl = sys.argv[1:6]
    url = urlparse(mysql_url)
    db = pymysql.connect(host=url.hostname, port=url.port or 3306, user=url.username or "root",
                         password=url.password or "", database=url.path.lstrip("/"))
    r = redis.Redis.from_url(redis_url)
    cursor = db.cursor(pymysql.cursors.DictCursor)
    cursor.execute(query)
    products = cursor.fetchall()
    cursor.close()
    count = 0
    for product in products:
        r.setex(f'{prefix}{product["id"]}', int(ttl), json.dumps(product, default=default))
        count += 1
    print(count)


if __name__ == "__main__":
    main()
