"""Lazy loading by hand: a subscriber to Redis' key-miss notifications that loads each missed key with one SELECT and
one SET (what an operator would write instead of `fill_on_miss`).

Usage: fill_on_miss.py REDIS_URL MYSQL_URL DB PREFIX COUNT READY_FILE
Subscribes to __keyevent@DB__:keymiss, touches READY_FILE, and for each missed key PREFIX<id> reads the row from
`million` and SETs its JSON with a 10-minute TTL; after COUNT fills (or 30 s without a miss) prints
`filled elapsed_seconds` from the first miss to the last fill.
"""
import json
import sys
import time
import urllib.parse

import pymysql
import redis


def main():
    redis_url, mysql_url, db, prefix, count, ready = sys.argv[1:7]
    count = int(count)
    r = redis.Redis.from_url(redis_url)
    url = urllib.parse.urlparse(mysql_url)
    conn = pymysql.connect(host=url.hostname, port=url.port or 3306, user=url.username or "root",
                           password=url.password or "", database=url.path.lstrip("/"), autocommit=True)
    p = r.pubsub(ignore_subscribe_messages=True)
    p.subscribe(f"__keyevent@{db}__:keymiss")
    while p.get_message(timeout=0.1) is None and not p.subscribed:
        pass
    open(ready, "w").close()
    filled, first, last = 0, None, None
    with conn.cursor() as c:
        while filled < count:
            message = p.get_message(timeout=30)
            if message is None:
                break
            if message["type"] != "message":
                continue
            key = message["data"].decode()
            if not key.startswith(prefix):
                continue
            if first is None:
                first = time.monotonic()
            c.execute("SELECT id, name, price, category_id, updated_at FROM million WHERE id = %s",
                      (int(key[len(prefix):]),))
            row = c.fetchone()
            if row is not None:
                value = {"id": row[0], "name": row[1], "price": str(row[2]), "category_id": row[3],
                         "updated_at": row[4].isoformat(sep=" ")}
                r.set(key, json.dumps(value, separators=(",", ":")), ex=600)
            filled += 1
            last = time.monotonic()
    print(filled, (last - first) if first else 0.0)


if __name__ == "__main__":
    main()
