"""A binlog refresher in plain Python: python-mysql-replication, and per changed row a SELECT of the row and a SET of
its key (the hand-written write-through a team would otherwise run).

Usage: binlog_refresher.py MYSQL_URL REDIS_URL SCHEMA TABLE KEY_PREFIX LOG_FILE LOG_POS COUNT SERVER_ID
Reads row events from LOG_FILE:LOG_POS; for each changed row reads `SELECT id, v FROM TABLE WHERE id = ?` and writes
KEY_PREFIX{id} = {"id":..,"v":..} with a 10-minute TTL; after COUNT rows prints `rows elapsed_seconds`.
"""
import json
import sys
import time
from urllib.parse import urlparse

import pymysql
import redis
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent


def main():
    mysql_url, redis_url, schema, table, prefix, log_file, log_pos, count, server_id = sys.argv[1:10]
    url = urlparse(mysql_url)
    settings = {"host": url.hostname, "port": url.port or 3306, "user": url.username or "root",
                "passwd": url.password or ""}
    r = redis.Redis.from_url(redis_url)
    db = pymysql.connect(host=settings["host"], port=settings["port"], user=settings["user"],
                         password=settings["passwd"], database=schema, autocommit=True)
    stream = BinLogStreamReader(connection_settings=settings, server_id=int(server_id), blocking=True,
                                resume_stream=True, log_file=log_file, log_pos=int(log_pos),
                                only_events=[WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent],
                                only_schemas=[schema], only_tables=[table])
    rows, first, last = 0, None, None
    target = int(count)
    with db.cursor() as c:
        for event in stream:
            for row in event.rows:
                values = row.get("after_values") or row.get("values")
                if first is None:
                    first = time.monotonic()
                c.execute(f"SELECT id, v FROM {table} WHERE id = %s", (values["id"],))
                found = c.fetchone()
                key = f"{prefix}{values['id']}"
                if found:
                    r.set(key, json.dumps({"id": found[0], "v": found[1]}, separators=(",", ":")), ex=600)
                else:
                    r.delete(key)
                rows += 1
                last = time.monotonic()
            if rows >= target:
                break
    stream.close()
    print(rows, (last - first) if first else 0.0)


if __name__ == "__main__":
    main()
