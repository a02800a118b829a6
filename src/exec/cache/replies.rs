//! The replies of the scripts that write values: their result, and the keys they found holding another Redis type
//! than the write's (counted and logged here).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::Value;

/// How often keys of another type are logged at most: a job whose `type` changed meets every key it has.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Keys of another type met since the last log line, and when that was.
static UNLOGGED: Mutex<(u64, Option<Instant>)> = Mutex::new((0, None));

/// The result of a value-writing script's `reply`: an integer as it is, or, from `{result, key, ...}`, the result
/// after counting and logging the keys (written over, or deleted by a member change; the other keys were written).
pub(super) fn written(reply: Value) -> Value {
    let Value::Array(mut items) = reply else {
        return reply;
    };
    if items.is_empty() {
        return Value::Array(items);
    }
    let keys = items.split_off(1);
    let result = items.pop().unwrap_or(Value::Nil);
    other_type(&keys);
    result
}

fn other_type(keys: &[Value]) {
    crate::telemetry::metrics::record_other_type(keys.len());
    let mut unlogged = UNLOGGED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    unlogged.0 += keys.len() as u64;
    if unlogged.1.is_some_and(|last| last.elapsed() < LOG_EVERY) {
        return;
    }
    let example = keys
        .first()
        .and_then(|key| redis::from_redis_value::<String>(key.clone()).ok())
        .unwrap_or_default();
    tracing::warn!(
        keys = unlogged.0,
        example = %example,
        "Keys held another Redis type than their job writes (its `type` changed, or two jobs write one key): \
         written over as the job's type (a member change deletes the key; the job's next run writes it). Counted in \
         cachewarden_other_type_keys_total."
    );
    *unlogged = (0, Some(Instant::now()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_reply_is_the_result_and_a_list_its_first_item() {
        assert_eq!(written(Value::Int(7)), Value::Int(7));
        let reply = Value::Array(vec![
            Value::Int(3),
            Value::BulkString(b"product:1".to_vec()),
            Value::BulkString(b"product:2".to_vec()),
        ]);
        assert_eq!(written(reply), Value::Int(3));
    }
}
