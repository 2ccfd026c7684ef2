//! `gregor data verify --data-dir DIR`: checks every batch of every partition's segments
//! (length, magic, offsets, CRC-32C) offline, as the broker's scrubber does in the
//! background, and lists what is damaged. Read-only: it takes no lock, so it can run
//! beside a broker, whose active segments may then end in a write in progress (listed as
//! an incomplete tail, not as damage).

use std::path::{Path, PathBuf};

use gregor_storage::{Disk, OsDisk};
use serde::Serialize;

/// What one segment holds.
#[derive(Debug, Serialize)]
pub struct SegmentReport {
    pub partition: String,
    pub file: PathBuf,
    pub bytes: u64,
    /// Bytes checked and found whole.
    pub valid_bytes: u64,
    /// Invalid bytes: where, at which offset, and why. `tail` when nothing valid follows.
    pub problem: Option<Problem>,
}

#[derive(Debug, Serialize)]
pub struct Problem {
    pub position: u64,
    pub offset: i64,
    pub reason: String,
    pub tail: bool,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub partitions: usize,
    pub segments: usize,
    pub bytes: u64,
    pub damaged: Vec<SegmentReport>,
    pub incomplete_tails: Vec<SegmentReport>,
}

/// Verifies every segment under `data_dir`, printing progress to stderr.
pub fn verify(data_dir: &Path) -> Result<Report, String> {
    let disk = OsDisk;
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(data_dir)
        .map_err(|e| format!("cannot read --data-dir {}: {e}", data_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir() && !p.to_string_lossy().ends_with("-delete"))
        .collect();
    dirs.sort();
    let mut report = Report {
        partitions: 0,
        segments: 0,
        bytes: 0,
        damaged: Vec::new(),
        incomplete_tails: Vec::new(),
    };
    let total = dirs.len();
    for (n, dir) in dirs.iter().enumerate() {
        let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        if logs.is_empty() {
            continue;
        }
        logs.sort();
        report.partitions += 1;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        eprintln!("[{}/{total}] {name}: {} segment(s)", n + 1, logs.len());
        let last = logs.len() - 1;
        for (i, path) in logs.iter().enumerate() {
            let base: i64 = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let file = disk
                .open(path, false)
                .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
            let len = file
                .len()
                .map_err(|e| format!("cannot stat {}: {e}", path.display()))?;
            report.segments += 1;
            report.bytes += len;
            let checked = gregor_storage::segment::verify_batches(
                file.as_ref(),
                0,
                len,
                base,
                u64::MAX,
                4 << 20,
            )
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let (valid_bytes, problem) = match checked {
                Ok((reached, _)) => (reached, None),
                Err((position, offset, reason)) => {
                    // Damage when a valid batch follows, or when a later segment does.
                    let follows = gregor_storage::segment::find_valid_batch(
                        file.as_ref(),
                        position + 1,
                        len,
                        offset,
                        &|_| true,
                    )
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?
                    .is_some();
                    let tail = i == last && !follows;
                    (
                        position,
                        Some(Problem {
                            position,
                            offset,
                            reason,
                            tail,
                        }),
                    )
                }
            };
            let seg = SegmentReport {
                partition: name.clone(),
                file: path.clone(),
                bytes: len,
                valid_bytes,
                problem,
            };
            match &seg.problem {
                Some(p) if p.tail => report.incomplete_tails.push(seg),
                Some(_) => report.damaged.push(seg),
                None => {}
            }
        }
    }
    Ok(report)
}

/// Prints the report for a person.
pub fn print(r: &Report) {
    println!(
        "{} partition(s), {} segment(s), {} bytes checked",
        r.partitions, r.segments, r.bytes
    );
    for seg in &r.damaged {
        if let Some(p) = &seg.problem {
            println!(
                "DAMAGED {} at byte {} (offset {}): {}",
                seg.file.display(),
                p.position,
                p.offset,
                p.reason
            );
        }
    }
    for seg in &r.incomplete_tails {
        if let Some(p) = &seg.problem {
            println!(
                "incomplete tail {} from byte {} (offset {}): {} (an unfinished write: the broker cuts it at start-up)",
                seg.file.display(),
                p.position,
                p.offset,
                p.reason
            );
        }
    }
    if r.damaged.is_empty() {
        println!("no damage found");
    } else {
        println!(
            "{} damaged segment(s): in a cluster, start the broker and its replica repairs them from an in-sync replica; alone, restore those partitions from a copy",
            r.damaged.len()
        );
    }
}
