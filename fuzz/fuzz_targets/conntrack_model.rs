//! The lock-free flow table against a `Mutex<HashMap>` model under arbitrary operation sequences
//! (inserts with any TTL and reclaimability, lookups, updates, removals, partial sweeps, time
//! jumps and batched lookups), IPv4 and IPv6 keys, any capacity and load factor the model allows
//! (the eviction window covers the table), any hash seed. Every result and the length must agree
//! after each step (`conntrack::table::testing::Harness`), and at the end the table must hold
//! exactly the model's entries, each once, with intact values.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use std::net::{Ipv4Addr, Ipv6Addr};
use vpcfw::conntrack::table::testing::{Harness, Op};
use vpcfw::conntrack::table::{EVICT_WINDOW, FlowKeyV4, FlowKeyV6, Pod};

#[derive(Arbitrary, Debug)]
enum RawOp {
    Insert { key: u8, ttl: u8, reclaimable: bool },
    Get { key: u8 },
    Update { key: u8, add: u8 },
    Remove { key: u8 },
    Sweep { budget: u8 },
    Advance { by: u8 },
    /// A large jump: `by` × 2^20.
    Jump { by: u8 },
    GetBatch { keys: Vec<u8> },
}

#[derive(Arbitrary, Debug)]
struct Input {
    /// Capacity 1..=64.
    capacity: u8,
    /// Extra slots beyond the capacity (the total is capped at the eviction window).
    spare: u8,
    seed: u64,
    v6: bool,
    /// Distinct key ids in use: 1..=256 (few keys: many collisions on the same entries).
    keys: u8,
    ops: Vec<RawOp>,
}

fn v4(id: u16) -> FlowKeyV4 {
    // Keys differ in one field or another, so that every field takes part in equality.
    let a = Ipv4Addr::from(0x0a00_0000 | u32::from(id % 37));
    FlowKeyV4::new(u32::from(id % 3), [6, 17][usize::from(id / 37 % 2)], 0, a, Ipv4Addr::new(192, 0, 2, 1), 1024 + id, 443)
}

fn v6(id: u16) -> FlowKeyV6 {
    let b = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 1, id % 41);
    FlowKeyV6::new(7, 17, u8::from(id % 2 == 1), Ipv6Addr::LOCALHOST, b, 53, id)
}

fn op(raw: &RawOp, keys: u16) -> Op {
    let k = |key: u8| u16::from(key) % keys;
    match *raw {
        RawOp::Insert { key, ttl, reclaimable } => Op::Insert { key: k(key), ttl: u32::from(ttl % 40), reclaimable },
        RawOp::Get { key } => Op::Get { key: k(key) },
        RawOp::Update { key, add } => Op::Update { key: k(key), add },
        RawOp::Remove { key } => Op::Remove { key: k(key) },
        RawOp::Sweep { budget } => Op::Sweep { budget: u16::from(budget) },
        RawOp::Advance { by } => Op::Advance { by: u32::from(by % 32) },
        RawOp::Jump { by } => Op::Advance { by: u32::from(by) << 20 },
        RawOp::GetBatch { ref keys } => Op::GetBatch { keys: keys.iter().map(|&x| k(x)).collect() },
    }
}

fn run<K: Pod + Eq + std::hash::Hash + std::fmt::Debug>(input: &Input, key_of: fn(u16) -> K) {
    let capacity = usize::from(input.capacity % 64) + 1;
    let slots = (capacity + usize::from(input.spare)).min(EVICT_WINDOW);
    let keys = u16::from(input.keys) + 1;
    let mut h = Harness::new(capacity, slots, input.seed, key_of);
    for (i, raw) in input.ops.iter().take(2000).enumerate() {
        let op = op(raw, keys);
        if let Err(e) = h.apply(&op) {
            panic!("step {i} (capacity {capacity}, slots {slots}): {e}");
        }
    }
    if let Err(e) = h.check_contents() {
        panic!("final contents (capacity {capacity}, slots {slots}): {e}");
    }
}

fuzz_target!(|input: Input| {
    if input.v6 {
        run(&input, v6);
    } else {
        run(&input, v4);
    }
});
