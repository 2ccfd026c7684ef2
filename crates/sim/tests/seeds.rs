//! Runs the simulator over a range of seeds: `SIM_SEEDS=FROM..TO` (default a bounded range
//! for the test suite; `./scripts/sim.sh` sweeps more). Each seed runs in its own process
//! (this test binary again, with `SIM_ONE=SEED`), so that no state of one run (a global
//! counter, a cache) can reach another: a seed replays the same run alone as in a sweep.
//! `SIM_JOBS` processes run at once (default: the machine's cores). Each seed's line says
//! what was acknowledged and what was found; a failing seed prints how to run it alone.

use std::process::Command;
use std::time::Instant;

use gregor_sim::{init_logging, run, Options};

fn seeds() -> std::ops::Range<u64> {
    let spec = std::env::var("SIM_SEEDS").unwrap_or_else(|_| "0..48".into());
    let (from, to) = spec
        .split_once("..")
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        .unwrap_or_else(|| panic!("SIM_SEEDS={spec}: write it as FROM..TO, e.g. 0..100"));
    from..to
}

/// One seed, in this process: prints its line (and its faults when it fails or `SIM_LOG`
/// is set), then `verdict: ok|failed|unjudged`.
fn run_one(seed: u64) {
    init_logging();
    let t = Instant::now();
    let verdict = match run(&Options::new(seed)) {
        Ok(o) => {
            eprintln!(
                "seed {seed}: {} acknowledged, {} lost, {} changed, {} duplicated, {} reordered, {} producers failed; {} faults, longest without an acknowledgement {:.1} s (from {:.1} s); {:.0} s simulated in {:.1} s; {} segment files opened again (log.open.files.max); run {:016x}",
                o.acknowledged,
                o.lost.len(),
                o.changed.len(),
                o.duplicated.len(),
                o.reordered.len(),
                o.fatal.len(),
                o.faults.iter().filter(|f| !f.contains("healed")).count(),
                o.longest_gap.0.as_secs_f64(),
                o.longest_gap.1.as_secs_f64(),
                o.simulated.as_secs_f64(),
                t.elapsed().as_secs_f64(),
                gregor_storage::handles::stats().reopened,
                o.fingerprint,
            );
            if !o.ok() || std::env::var("SIM_LOG").is_ok() {
                eprintln!("  faults:\n    {}", o.faults.join("\n    "));
                eprintln!("  lost: {:?}", &o.lost[..o.lost.len().min(10)]);
                eprintln!("  changed: {:?}", &o.changed[..o.changed.len().min(10)]);
                eprintln!(
                    "  duplicated: {:?}",
                    &o.duplicated[..o.duplicated.len().min(10)]
                );
                eprintln!(
                    "  reordered: {:?}",
                    &o.reordered[..o.reordered.len().min(10)]
                );
                eprintln!("  producers failed: {:?}", o.fatal);
            }
            if o.ok() {
                "ok"
            } else {
                "failed"
            }
        }
        Err(e) => {
            eprintln!("seed {seed}: not judged: {e}");
            "unjudged"
        }
    };
    eprintln!("verdict: {verdict}");
}

/// Runs `seed` in a child process; its output and verdict.
fn spawn(seed: u64) -> std::process::Child {
    Command::new(std::env::current_exe().expect("this test binary"))
        .args([
            "--exact",
            "no_seed_loses_an_acknowledged_write",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SIM_ONE", seed.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run a seed in a child process")
}

#[test]
fn no_seed_loses_an_acknowledged_write() {
    if let Ok(seed) = std::env::var("SIM_ONE") {
        run_one(seed.parse().expect("SIM_ONE is a seed"));
        return;
    }
    let started = Instant::now();
    let range = seeds();
    let jobs = std::env::var("SIM_JOBS")
        .ok()
        .and_then(|j| j.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let mut failed = Vec::new();
    let mut unjudged = Vec::new();
    let mut acknowledged = 0u64;
    let mut pending = range.clone();
    let mut running: Vec<(u64, std::process::Child)> = Vec::new();
    loop {
        while running.len() < jobs {
            let Some(seed) = pending.next() else { break };
            running.push((seed, spawn(seed)));
        }
        if running.is_empty() {
            break;
        }
        let (seed, child) = running.remove(0);
        let out = child.wait_with_output().expect("a seed's process");
        let text = String::from_utf8_lossy(&out.stderr);
        for line in text.lines().filter(|l| {
            l.starts_with("seed ") || l.starts_with("  ") || std::env::var("SIM_LOG").is_ok()
        }) {
            eprintln!("{line}");
        }
        acknowledged += text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("seed {seed}: ")))
            .and_then(|l| l.split(' ').next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        match text.lines().find_map(|l| l.strip_prefix("verdict: ")) {
            Some("ok") => {}
            Some("failed") => failed.push(seed),
            _ => {
                eprintln!("seed {seed}: its process ended without a verdict:\n{text}");
                unjudged.push(seed);
            }
        }
    }
    let n = range.end - range.start;
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{n} seeds in {secs:.1} s ({:.2} seeds/s, {jobs} at once), {acknowledged} writes acknowledged",
        n as f64 / secs
    );
    let first = failed.first().or(unjudged.first()).copied().unwrap_or(0);
    assert!(
        failed.is_empty() && unjudged.is_empty(),
        "seeds the checker failed (acknowledged writes lost or changed, idempotent records duplicated or reordered, idempotent producers refused): {failed:?}; seeds not judged: {unjudged:?}; run one alone with SIM_SEEDS={first}..{} SIM_LOG=info cargo test -p gregor-sim --test seeds -- --nocapture",
        first + 1
    );
}

#[test]
fn a_healthy_cluster_acknowledges_every_write() {
    if std::env::var("SIM_ONE").is_ok() {
        return;
    }
    init_logging();
    let mut opts = Options::new(1_000_000);
    opts.faults = false;
    opts.writing = std::time::Duration::from_secs(10);
    let o = run(&opts).expect("judged");
    assert!(
        o.acknowledged > 100,
        "only {} writes acknowledged in 10 s",
        o.acknowledged
    );
    assert!(o.ok(), "lost {:?}, changed {:?}", o.lost, o.changed);
}

#[test]
fn a_seed_replays_the_same_run() {
    if std::env::var("SIM_ONE").is_ok() {
        return;
    }
    let runs: Vec<String> = (0..2)
        .map(|_| {
            let out = spawn(5).wait_with_output().expect("a seed's process");
            let text = String::from_utf8_lossy(&out.stderr).into_owned();
            text.lines()
                .find(|l| l.starts_with("seed 5: "))
                .map(|l| l.split("; run ").nth(1).unwrap_or_default().to_string())
                .unwrap_or_else(|| panic!("seed 5 printed no result:\n{text}"))
        })
        .collect();
    assert_eq!(
        runs[0], runs[1],
        "seed 5 ran differently twice: every write, its offset and time, and every fault are in the fingerprint"
    );
}
