"""A join-aware binlog refresher in plain Python, the script a team writes when a cached product embeds its
category's name: python-mysql-replication on the categories table, and per changed category a SELECT of the products
that join it (through the join) and a pipelined SET of their keys.

Usage: join_refresher.py MYSQL_URL REDIS_URL SCHEMA KEY_PREFIX LOG_FILE LOG_POS CHANGES SERVER_ID
Reads category row events from LOG_FILE:LOG_POS; after CHANGES changed categories prints `changes keys elapsed
last`: the seconds from the first event to the last key written, and the wall-clock time of that last write.
"""
import json
import sys
import time
from urllib.parse import urlparse

import pymysql
import redis
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

QUERY = ("SELECT p.id, p.name, c.name AS category FROM dj_products p JOIN dj_categories c ON c.id = p.category_id "
         "WHERE p.category_id = %s")


def main():
    mysql_url, redis_url, schema, prefix, log_file, log_pos, count, server_id = sys.argv[1:9]
    url = urlparse(mysql_url)
    settings = {"host": url.hostname, "port": url.port or 3306, "user": url.username or "root",
                "passwd": url.password or ""}
    r = redis.Redis.from_url(redis_url)
    db = pymysql.connect(host=settings["host"], port=settings["port"], user=settings["user"],
                         password=settings["passwd"], database=schema, autocommit=True)
    stream = BinLogStreamReader(connection_settings=settings, server_id=int(server_id), blocking=True,
                                resume_stream=True, log_file=log_file, log_pos=int(log_pos),
                                only_events=[WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent],
                                only_schemas=[schema], only_tables=["dj_categories"])
    changes, keys, first, last, last_wall = 0, 0, None, None, None
    target = int(count)
    with db.cursor() as c:
        for event in stream:
            for row in event.rows:
                values = row.get("after_values") or row.get("values")
                if first is None:
                    first = time.monotonic()
                c.execute(QUERY, (values["id"],))
                pipe = r.pipeline(transaction=False)
                for product_id, name, category in c.fetchall():
                    value = json.dumps({"id": product_id, "name": name, "category": category}, separators=(",", ":"))
                    pipe.set(f"{prefix}{product_id}", value, ex=600)
                    keys += 1
                pipe.execute()
                changes += 1
                last, last_wall = time.monotonic(), time.time()
            if changes >= target:
                break
    stream.close()
    print(changes, keys, (last - first) if first else 0.0, last_wall or 0.0)


if __name__ == "__main__":
    main()
