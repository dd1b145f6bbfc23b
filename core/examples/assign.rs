//! Partition assignment figures for BENCHMARKS.md §7: time to assign 1024
//! partitions × R among N nodes in Z zones, the balance (largest share
//! against the capacity-weighted mean), and the pairs a join moves against
//! the optimum (the joiner's share, R·P·c_new/Σc). Run by
//! `bash bench/placement.sh`.

use std::time::Instant;

use rondo_core::NodeId;
use rondo_core::partitions::{Assignment, Candidate, PARTITION_BITS, assign};

fn nodes(n: usize, zones: usize, cap: impl Fn(usize) -> u64) -> Vec<Candidate> {
    (0..n)
        .map(|i| Candidate {
            id: NodeId(uuid::Uuid::from_u128(0x1000 + i as u128)),
            zone: format!("zone-{}", i % zones),
            capacity: cap(i),
        })
        .collect()
}

/// Largest count over the count its capacity asks (1.0 is perfect).
fn balance(a: &Assignment, c: &[Candidate]) -> f64 {
    let total: u64 = c.iter().map(|c| c.capacity).sum();
    let slots = (a.partitions() * a.replicas) as f64;
    let counts = a.counts();
    c.iter()
        .filter(|c| c.capacity > 0)
        .map(|c| counts[&c.id] as f64 / (slots * c.capacity as f64 / total as f64))
        .fold(0.0, f64::max)
}

/// Median of `runs` timings of `f`, in milliseconds.
fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut times = Vec::with_capacity(runs);
    let mut last = None;
    for _ in 0..runs {
        let t = Instant::now();
        last = Some(f());
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    match last {
        Some(v) => (times[runs / 2], v),
        None => unreachable!("runs > 0"),
    }
}

fn main() -> Result<(), rondo_core::Error> {
    let runs = 9;
    println!("case\tms (median of {runs})\tbalance (max/mean)\tmoved/optimum");
    for &(n, zones, r, mixed) in &[
        (5usize, 1usize, 3usize, false),
        (16, 4, 3, false),
        (64, 4, 3, false),
        (64, 4, 3, true),
    ] {
        // Mixed: capacities of 1, 2 and 4 units.
        let cap = |i: usize| if mixed { 1 << (i % 3) } else { 4 };
        let c = nodes(n, zones, cap);
        let (ms, a) = time(runs, || assign(&c, r, PARTITION_BITS, None));
        let a = a?;
        a.validate(&c)?;
        // A joiner of the same capacity as node 0.
        let mut grown = c.clone();
        grown.push(Candidate {
            id: NodeId(uuid::Uuid::from_u128(0x9999)),
            zone: "zone-0".into(),
            capacity: cap(0),
        });
        let (join_ms, b) = time(runs, || assign(&grown, r, PARTITION_BITS, Some(&a)));
        let b = b?;
        b.validate(&grown)?;
        let total: u64 = grown.iter().map(|c| c.capacity).sum();
        let optimum = (a.partitions() * r) as f64 * cap(0) as f64 / total as f64;
        let moved = b.moved_from(Some(&a)) as f64;
        let kind = if mixed { "mixed" } else { "equal" };
        println!(
            "N={n} Z={zones} R={r} {kind}: fresh\t{ms:.1}\t{:.3}\t-",
            balance(&a, &c)
        );
        println!(
            "N={n} Z={zones} R={r} {kind}: join\t{join_ms:.1}\t{:.3}\t{:.3}",
            balance(&b, &grown),
            moved / optimum
        );
    }
    Ok(())
}
