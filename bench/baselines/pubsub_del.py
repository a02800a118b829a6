"""The seed's invalidation subscriber: one DEL per pub/sub message.

Usage: pubsub_del.py REDIS_URL CHANNEL COUNT READY_FILE
Subscribes, touches READY_FILE, deletes the key named by each message, and after COUNT messages (or 30 s without
one) prints `received elapsed_seconds` from the first message to the last.
"""
import sys
import time

import redis


def main():
    redis_url, channel, count, ready = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    r = redis.Redis.from_url(redis_url)
    p = r.pubsub(ignore_subscribe_messages=True)
    p.subscribe(channel)
    while p.get_message(timeout=0.1) is None and not p.subscribed:
        pass
    open(ready, "w").close()
    received, first, last = 0, None, None
    while received < count:
        try:
            message = p.get_message(timeout=30)
        except redis.ConnectionError:
            break  # disconnected (e.g. by the output-buffer limit): the rest is lost
        if message is None:
            break
        if message["type"] != "message":
            continue
        if first is None:
            first = time.monotonic()
        r.delete(message["data"])
        received += 1
        last = time.monotonic()
    print(received, (last - first) if first else 0.0)


if __name__ == "__main__":
    main()
