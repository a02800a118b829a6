//! A batch's per-slot write scripts as one call per master: on Redis 7 and later a script may declare
//! `allow-cross-slot-keys` and touch keys of every slot its node serves, so the per-slot scripts of one master
//! (`CLUSTER_INVALIDATE`, `FENCED_APPLY`, `PLAIN_APPLY`) go as one call of their variant for
//! many slots (`scripts::MANY_SLOTS`), each slot's part checked and written as its own script would. A batch of a few
//! hundred keys then costs each master one script call instead of one per key's slot. (A guarded write of read data
//! builds its call per master itself, in a layout of its own: see `guard` and `scripts::GUARDED_WRITES`.)
//!
//! Each slot's reply comes back in the call's reply, in order, so callers see the replies of the per-slot scripts.
//! The call declares no key (declared keys must share one slot even with the flag), so the server cannot check the
//! slots up front: a key of a slot the master no longer serves, or is migrating away, stops the script with an error
//! where it is (a master that lost the scripts answers NOSCRIPT before it starts). Redis keeps what the groups before
//! the error wrote, and every group of the call then goes again as its per-slot script through [`Cluster::send`],
//! which follows the cluster's redirects. Running a group twice is safe: a guarded set checks its slot's version and
//! evidence again; an invalidation records the same version again and unlinks or writes the same keys; the plain and
//! fenced writes set the same values (a set's chunks only add, a rename of a built set finds it gone the second
//! time). The one thing a second run cannot tell is a newer write of the same key between the two runs: the
//! second run writes the older value again, as a retried pipeline on a single node would; the key's next change or
//! refresh corrects it. That needs a slot moving in the middle of a batch.

use redis::Value;

use super::Cluster;
use crate::exec::cache::CacheError;

/// A per-slot script call taken apart: the script's hash, its keys and its arguments.
struct SlotCall<'c> {
    sha: &'c [u8],
    keys: Vec<&'c [u8]>,
    args: Vec<&'c [u8]>,
}

/// `cmd` as an `EVALSHA sha numkeys key… arg…`, or `None` when it is another command.
fn slot_call(cmd: &redis::Cmd) -> Option<SlotCall<'_>> {
    let mut args = cmd.args_iter().map(|arg| match arg {
        redis::Arg::Simple(bytes) => Some(bytes),
        _ => None,
    });
    if !args.next()??.eq_ignore_ascii_case(b"EVALSHA") {
        return None;
    }
    let sha = args.next()??;
    let count: usize = std::str::from_utf8(args.next()??).ok()?.parse().ok()?;
    let rest: Vec<&[u8]> = args.collect::<Option<_>>()?;
    let (keys, args) = (rest.get(..count)?.to_vec(), rest.get(count..)?.to_vec());
    Some(SlotCall { sha, keys, args })
}

/// One call of `many` (the variant for many slots) for `calls`: no declared key (declared keys must share a slot),
/// then the number of groups and, per group, its numbers of keys and arguments, its keys and its arguments.
fn merged(many: &redis::Script, calls: &[SlotCall<'_>]) -> redis::Cmd {
    // Sized up front: a call carries a few thousand arguments, every value of the batch among them.
    let parts = calls
        .iter()
        .map(|call| 2 + call.keys.len() + call.args.len())
        .sum::<usize>();
    let bytes = (calls.iter())
        .flat_map(|call| call.keys.iter().chain(&call.args))
        .map(|part| part.len())
        .sum::<usize>();
    let mut cmd = redis::Cmd::with_capacity(4 + parts, 64 + bytes + 8 * parts);
    cmd.arg("EVALSHA").arg(many.get_hash()).arg(0).arg(calls.len());
    for call in calls {
        cmd.arg(call.keys.len()).arg(call.args.len());
        for part in call.keys.iter().chain(&call.args) {
            cmd.arg(*part);
        }
    }
    cmd
}

/// The replies of the `n` slots a call for many slots wrote, from its reply: the array of them, or the one slot's
/// reply as it is; `None` when the call failed (a slot on the move) or answered something else.
pub(super) fn per_slot(reply: Value, n: usize) -> Option<Vec<Value>> {
    match reply {
        Value::ServerError(_) => None,
        Value::Array(parts) if n > 1 && parts.len() == n => Some(parts),
        reply if n == 1 => Some(vec![reply]),
        _ => None,
    }
}

impl Cluster {
    /// [`Cluster::send`], with the per-slot write scripts of each master merged into one call where the cluster
    /// allows it (see the module docs). Returns the replies in the commands' order.
    pub(super) async fn send_merged(&self, commands: &[(u16, redis::Cmd)]) -> Result<Vec<Value>, CacheError> {
        if !self.many_slots || commands.len() < 2 {
            return self.send(commands).await;
        }
        let mut calls: Vec<Option<SlotCall<'_>>> = commands.iter().map(|(_, cmd)| slot_call(cmd)).collect();
        let slot_map = self.slot_map();
        // Per master (and script), the commands that can go as one call.
        let mut groups: Vec<(Option<u16>, &[u8], Vec<usize>)> = Vec::new();
        let mut alone: Vec<usize> = Vec::new();
        for (i, call) in calls.iter().enumerate() {
            let owner = slot_map.owner[commands[i].0 as usize];
            match call {
                Some(call) if owner.is_some() && self.scripts.many_slots_of(call.sha).is_some() => {
                    match groups.iter_mut().find(|(o, sha, _)| *o == owner && *sha == call.sha) {
                        Some((_, _, members)) => members.push(i),
                        None => groups.push((owner, call.sha, vec![i])),
                    }
                }
                _ => alone.push(i),
            }
        }
        let mut units: Vec<(u16, redis::Cmd)> = Vec::with_capacity(groups.len() + alone.len());
        let mut members: Vec<Vec<usize>> = Vec::with_capacity(units.capacity());
        for (_, sha, group) in groups {
            if group.len() == 1 {
                alone.push(group[0]);
                continue;
            }
            let many = self.scripts.many_slots_of(sha).expect("grouped by having a variant");
            let parts: Vec<SlotCall<'_>> = (group.iter())
                .map(|&i| calls[i].take().expect("grouped as a script call"))
                .collect();
            units.push((commands[group[0]].0, merged(many, &parts)));
            members.push(group);
        }
        for i in alone {
            units.push(commands[i].clone());
            members.push(vec![i]);
        }
        let mut replies: Vec<Option<Value>> = vec![None; commands.len()];
        let mut again: Vec<usize> = Vec::new();
        let all: Vec<usize> = (0..units.len()).collect();
        for (indices, sent) in self.round(&units, &all, &Default::default()).await {
            let values = match sent {
                Ok(values) => values,
                Err(_) => {
                    again.extend(indices.iter().flat_map(|&u| members[u].iter().copied()));
                    continue;
                }
            };
            for (u, value) in indices.into_iter().zip(values) {
                match per_slot(value, members[u].len()) {
                    Some(parts) => {
                        for (&i, part) in members[u].iter().zip(parts) {
                            replies[i] = Some(part);
                        }
                    }
                    None => again.extend(members[u].iter().copied()),
                }
            }
        }
        if !again.is_empty() {
            again.sort_unstable();
            let retried: Vec<(u16, redis::Cmd)> = again.iter().map(|&i| commands[i].clone()).collect();
            for (i, value) in again.into_iter().zip(self.send(&retried).await?) {
                replies[i] = Some(value);
            }
        }
        Ok(replies.into_iter().map(|reply| reply.unwrap_or(Value::Nil)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_script_call_is_taken_apart_and_merged_group_after_group() {
        let mut one = redis::cmd("EVALSHA");
        one.arg("abc").arg(2).arg("k1").arg("k2").arg("a1");
        let mut two = redis::cmd("EVALSHA");
        two.arg("abc").arg(1).arg("k3").arg("a2").arg("a3");
        let calls = [slot_call(&one).unwrap(), slot_call(&two).unwrap()];
        assert_eq!(calls[0].sha, b"abc");
        assert_eq!(calls[0].keys, [b"k1".as_slice(), b"k2"]);
        assert_eq!(calls[1].args, [b"a2".as_slice(), b"a3"]);
        let many = redis::Script::new("return 1");
        let cmd = merged(&many, &calls);
        let words: Vec<Vec<u8>> = cmd
            .args_iter()
            .map(|arg| match arg {
                redis::Arg::Simple(bytes) => bytes.to_vec(),
                _ => Vec::new(),
            })
            .collect();
        let text: Vec<&str> = words.iter().map(|w| std::str::from_utf8(w).unwrap()).collect();
        assert_eq!(
            text,
            [
                "EVALSHA",
                many.get_hash(),
                "0",
                "2",
                "2",
                "1",
                "k1",
                "k2",
                "a1",
                "1",
                "2",
                "k3",
                "a2",
                "a3"
            ]
        );
        assert!(slot_call(&redis::cmd("SET").arg("k").arg("v").clone()).is_none());
    }
}
