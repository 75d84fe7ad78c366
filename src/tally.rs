//! The differential count: counts by class, percentages, M:E ratio, blast percentage with its 95 %
//! Wilson interval, the target count, rare-cell alerts and operator corrections; and the
//! append-only, fsync'd journal that makes the count survive a crash or power loss, held by one run
//! at a time.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Errors of the tally and its journal.
#[derive(Debug, Error)]
pub enum TallyError {
    #[error("{path}: {message}")]
    Io { path: String, message: String },
    #[error("{path}:{line}: corrupt journal entry: {message}")]
    Corrupt {
        path: String,
        line: usize,
        message: String,
    },
    #[error("no counted cell with id {0}")]
    NoSuchCell(u64),
    #[error("{path}: another marrowscope run is counting into this journal now; let it end (or stop it) first, or give this run another --report folder")]
    InUse { path: String },
}

/// Granulocytic-series classes (myeloid side of the M:E ratio; blasts are reported separately).
pub const MYELOID: [&str; 8] = ["PMO", "MYB", "MMZ", "NGB", "NGS", "EOS", "BAS", "ABE"];
/// Erythroid precursors (erythroid side of the M:E ratio).
pub const ERYTHROID: [&str; 2] = ["EBO", "PEB"];
/// Class code of blasts.
pub const BLAST: &str = "BLA";

/// Where the stage was when a cell was counted: the source's frame index and the tracker's camera
/// position (world pixels) in that frame. A resumed run starts the same source there.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct StagePoint {
    pub frame: u64,
    pub camera: (f32, f32),
}

/// One journal entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Entry {
    /// A run began reading this source (its description) with this classifier (its manifest's
    /// name; absent in journals of older versions); counts after it came from that source.
    Start {
        source: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        model: Option<String>,
    },
    /// A cell was counted: id, class, probability, the frame of its best view and its world position;
    /// `at` is where the stage was when it was counted (absent in journals of older versions).
    Count {
        id: u64,
        class: String,
        p: f32,
        frame: u64,
        x: f32,
        y: f32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<StagePoint>,
    },
    /// The operator gave a counted cell another class.
    Reassign { id: u64, class: String },
    /// The operator removed a counted cell.
    Discard { id: u64 },
}

/// A counted cell as the tally holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub id: u64,
    pub class: String,
    /// Class the model gave, before any correction.
    pub model_class: String,
    pub probability: f32,
    pub frame: u64,
    pub world: (f32, f32),
}

/// The running differential.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    records: Vec<Record>,
    pub target: u32,
}

/// A 95 % confidence interval.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Interval {
    pub low: f64,
    pub high: f64,
}

/// Wilson score interval for k successes out of n at 95 % confidence.
pub fn wilson_95(k: u64, n: u64) -> Option<Interval> {
    if n == 0 {
        return None;
    }
    let z = 1.959_964_f64;
    let (k, n) = (k as f64, n as f64);
    let p = k / n;
    let denom = 1.0 + z * z / n;
    let centre = (p + z * z / (2.0 * n)) / denom;
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / denom;
    Some(Interval {
        low: (centre - half).max(0.0),
        high: (centre + half).min(1.0),
    })
}

impl Tally {
    pub fn new(target: u32) -> Tally {
        Tally {
            records: Vec::new(),
            target,
        }
    }

    /// Applies one journal entry.
    pub fn apply(&mut self, entry: &Entry) -> Result<(), TallyError> {
        match entry {
            Entry::Start { .. } => {}
            Entry::Count {
                id,
                class,
                p,
                frame,
                x,
                y,
                ..
            } => self.records.push(Record {
                id: *id,
                class: class.clone(),
                model_class: class.clone(),
                probability: *p,
                frame: *frame,
                world: (*x, *y),
            }),
            Entry::Reassign { id, class } => {
                let r = self.find_mut(*id)?;
                r.class = class.clone();
            }
            Entry::Discard { id } => {
                let pos = self
                    .records
                    .iter()
                    .position(|r| r.id == *id)
                    .ok_or(TallyError::NoSuchCell(*id))?;
                self.records.remove(pos);
            }
        }
        Ok(())
    }

    fn find_mut(&mut self, id: u64) -> Result<&mut Record, TallyError> {
        self.records
            .iter_mut()
            .find(|r| r.id == id)
            .ok_or(TallyError::NoSuchCell(id))
    }

    pub fn records(&self) -> &[Record] {
        &self.records
    }

    pub fn last(&self) -> Option<&Record> {
        self.records.last()
    }

    /// Highest id counted so far.
    pub fn max_id(&self) -> Option<u64> {
        self.records.iter().map(|r| r.id).max()
    }

    /// Every counted cell, review included.
    pub fn total(&self) -> u64 {
        self.records.len() as u64
    }

    /// Cells with a class (review excluded): the denominator of the differential.
    pub fn classified(&self) -> u64 {
        self.records
            .iter()
            .filter(|r| r.class != crate::classify::REVIEW)
            .count() as u64
    }

    pub fn review(&self) -> u64 {
        self.total() - self.classified()
    }

    /// Counts per class code (REVIEW included as its own key).
    pub fn counts(&self) -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        for r in &self.records {
            *m.entry(r.class.clone()).or_insert(0) += 1;
        }
        m
    }

    /// Percentage of classified cells in a class.
    pub fn percent(&self, class: &str) -> f64 {
        let n = self.classified();
        if n == 0 {
            return 0.0;
        }
        100.0 * self.count_of(class) as f64 / n as f64
    }

    pub fn count_of(&self, class: &str) -> u64 {
        self.records.iter().filter(|r| r.class == class).count() as u64
    }

    /// Myeloid : erythroid ratio (None without erythroid cells).
    pub fn me_ratio(&self) -> Option<f64> {
        let m: u64 = MYELOID.iter().map(|c| self.count_of(c)).sum();
        let e: u64 = ERYTHROID.iter().map(|c| self.count_of(c)).sum();
        (e > 0).then(|| m as f64 / e as f64)
    }

    /// Blast percentage of classified cells and its 95 % Wilson interval (in percent).
    pub fn blast_percent(&self) -> (f64, Option<Interval>) {
        let n = self.classified();
        let k = self.count_of(BLAST);
        let ci = wilson_95(k, n).map(|i| Interval {
            low: i.low * 100.0,
            high: i.high * 100.0,
        });
        (self.percent(BLAST), ci)
    }

    /// True once the classified count reaches the target.
    pub fn target_reached(&self) -> bool {
        self.classified() >= self.target as u64
    }
}

/// The append-only journal of counted cells and corrections.
pub struct Journal {
    file: File,
    path: PathBuf,
    /// The complete entries the file held when it was opened (where a resumed run picks up).
    replayed: Vec<Entry>,
}

/// Takes the journal's exclusive lock for as long as `file` is open (the system lets it go when the
/// process ends, however it ends), so that a second run into the same report folder is refused
/// before it reads the journal: two runs appending to one journal would count each cell twice, and
/// the second, taking the first's half-written last line for a torn one, would cut it off. Where
/// the file system keeps no locks, the run goes on with a warning.
fn hold_alone(file: &File, path: &Path) -> Result<(), TallyError> {
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(std::fs::TryLockError::WouldBlock) => Err(TallyError::InUse {
            path: path.display().to_string(),
        }),
        Err(std::fs::TryLockError::Error(e)) => {
            log::warn!(
                "{}: cannot lock the journal ({e}); make sure no other run counts into this folder",
                path.display()
            );
            Ok(())
        }
    }
}

impl Journal {
    /// Opens (or creates) a journal and replays it into a tally. A torn last line (a crash in the
    /// middle of a write) is cut off; a corrupt line elsewhere is an error naming its line.
    pub fn open(path: &Path, target: u32) -> Result<(Journal, Tally), TallyError> {
        let io = |e: std::io::Error| TallyError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        if path.is_dir() {
            return Err(io(std::io::Error::other(
                "a folder, where the count journal file goes",
            )));
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io)?;
        hold_alone(&file, path)?;
        let (tally, replayed, good_len) = replay(&mut file, path, target)?;
        let len = file.metadata().map_err(io)?.len();
        if good_len < len {
            log::warn!(
                "{}: dropping a torn last entry ({} bytes) left by an interrupted write",
                path.display(),
                len - good_len
            );
            file.set_len(good_len).map_err(io)?;
        }
        file.seek(SeekFrom::End(0)).map_err(io)?;
        Ok((
            Journal {
                file,
                path: path.to_path_buf(),
                replayed,
            },
            tally,
        ))
    }

    /// Appends an entry and forces it to disk before returning.
    pub fn append(&mut self, entry: &Entry) -> Result<(), TallyError> {
        let io = |e: std::io::Error| TallyError::Io {
            path: self.path.display().to_string(),
            message: e.to_string(),
        };
        let mut line = serde_json::to_string(entry).map_err(|e| TallyError::Io {
            path: self.path.display().to_string(),
            message: e.to_string(),
        })?;
        line.push('\n');
        self.file.write_all(line.as_bytes()).map_err(io)?;
        self.file.sync_data().map_err(io)?;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The complete entries the journal held when it was opened, in order (a torn last line left
    /// out); entries appended since are not included.
    pub fn replayed(&self) -> &[Entry] {
        &self.replayed
    }

    /// Starts a new count: the current journal is kept under a dated name (nothing is deleted)
    /// and an empty one takes its place. Returns the new, empty tally and where the old journal went.
    pub fn start_over(&mut self, target: u32) -> Result<(Tally, PathBuf), TallyError> {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut kept = self.path.with_file_name(format!("journal-{stamp}.jsonl"));
        let mut n = 1;
        while kept.exists() {
            kept = self
                .path
                .with_file_name(format!("journal-{stamp}-{n}.jsonl"));
            n += 1;
        }
        std::fs::rename(&self.path, &kept).map_err(|e| TallyError::Io {
            path: self.path.display().to_string(),
            message: e.to_string(),
        })?;
        let (journal, tally) = Journal::open(&self.path, target)?;
        *self = journal;
        Ok((tally, kept))
    }
}

/// Where a resumed run of the same source picks up: the stage point of the last counted cell, and
/// the world positions of the cells counted since the source was first started, so the tracker
/// does not count them again when they are still in view.
#[derive(Debug, Clone, PartialEq)]
pub struct ResumePoint {
    pub at: StagePoint,
    pub counted: Vec<(f32, f32)>,
}

/// The resume point for `source` in a list of journal entries: the entries from the first start of
/// `source` after the last start of another source, when one of their counts carries a stage point. Cells discarded by the operator stay in `counted`
/// (they were seen there).
pub fn resume_point(entries: &[Entry], source: &str) -> Option<ResumePoint> {
    let after_other = entries
        .iter()
        .rposition(|e| matches!(e, Entry::Start { source: s, .. } if s != source))
        .map_or(0, |i| i + 1);
    let first_start = entries[after_other..]
        .iter()
        .position(|e| matches!(e, Entry::Start { source: s, .. } if s == source))?;
    let chain = &entries[after_other + first_start..];
    let counts = chain.iter().filter_map(|e| match e {
        Entry::Count { x, y, at, .. } => Some(((*x, *y), *at)),
        _ => None,
    });
    let counted: Vec<(f32, f32)> = counts.clone().map(|(world, _)| world).collect();
    let at = counts.filter_map(|(_, at)| at).next_back()?;
    Some(ResumePoint { at, counted })
}

/// The source the journal's last run counted from (its last start entry), if any.
pub fn last_source(entries: &[Entry]) -> Option<&str> {
    entries.iter().rev().find_map(|e| match e {
        Entry::Start { source, .. } => Some(source.as_str()),
        _ => None,
    })
}

/// The classifier that counted the journal's cells: the model of its last start entry that names
/// one (None for an empty journal or one of an older version).
pub fn last_model(entries: &[Entry]) -> Option<&str> {
    entries.iter().rev().find_map(|e| match e {
        Entry::Start { model, .. } => model.as_deref(),
        _ => None,
    })
}

/// Replays journal lines; returns the tally, the complete entries and their byte length.
fn replay(
    file: &mut File,
    path: &Path,
    target: u32,
) -> Result<(Tally, Vec<Entry>, u64), TallyError> {
    let mut tally = Tally::new(target);
    let mut entries = Vec::new();
    let mut reader = BufReader::new(&mut *file);
    let mut good_len = 0u64;
    let mut line_no = 0;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        // Read as bytes: a write torn inside a multi-byte character (a source path such as
        // "Müller/frames") is a torn tail like any other, not a text error.
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| TallyError::Io {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
        if n == 0 {
            break;
        }
        line_no += 1;
        if !buf.ends_with(b"\n") {
            // Torn final write: never acknowledged, so never counted.
            break;
        }
        let corrupt = |message: String| TallyError::Corrupt {
            path: path.display().to_string(),
            line: line_no,
            message,
        };
        let line = std::str::from_utf8(&buf)
            .map_err(|_| corrupt("not UTF-8 text (is this a count journal?)".into()))?;
        if line.trim().is_empty() {
            good_len += n as u64;
            continue;
        }
        let entry: Entry = serde_json::from_str(line.trim()).map_err(|e| corrupt(e.to_string()))?;
        tally.apply(&entry).map_err(|e| corrupt(e.to_string()))?;
        entries.push(entry);
        good_len += n as u64;
    }
    Ok((tally, entries, good_len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(id: u64, class: &str) -> Entry {
        Entry::Count {
            id,
            class: class.into(),
            p: 0.9,
            frame: id,
            x: 0.0,
            y: 0.0,
            at: None,
        }
    }

    #[test]
    fn wilson_interval_known_values() {
        // 10 of 100: Wilson 95 % is about 5.52 % .. 17.44 %.
        let i = wilson_95(10, 100).unwrap();
        assert!(
            (i.low - 0.0552).abs() < 5e-4 && (i.high - 0.1744).abs() < 5e-4,
            "{i:?}"
        );
        let zero = wilson_95(0, 20).unwrap();
        assert_eq!(zero.low, 0.0);
        assert!(zero.high > 0.1);
        assert!(wilson_95(0, 0).is_none());
    }

    #[test]
    fn differential_and_corrections() {
        let mut t = Tally::new(4);
        for (i, c) in ["BLA", "NGS", "NGS", "EBO", "REVIEW"].iter().enumerate() {
            t.apply(&count(i as u64, c)).unwrap();
        }
        assert_eq!(t.total(), 5);
        assert_eq!(t.classified(), 4);
        assert!((t.percent("NGS") - 50.0).abs() < 1e-9);
        assert_eq!(t.me_ratio(), Some(2.0));
        assert!(t.target_reached());
        t.apply(&Entry::Reassign {
            id: 0,
            class: "LYT".into(),
        })
        .unwrap();
        t.apply(&Entry::Discard { id: 3 }).unwrap();
        assert_eq!(t.count_of("BLA"), 0);
        assert_eq!(t.me_ratio(), None);
        assert!(t.apply(&Entry::Discard { id: 99 }).is_err());
    }

    #[test]
    fn journal_survives_reopen_and_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        {
            let (mut j, t) = Journal::open(&path, 200).unwrap();
            assert_eq!(t.total(), 0);
            j.append(&count(1, "BLA")).unwrap();
            j.append(&count(2, "LYT")).unwrap();
        }
        // A crash in the middle of the third write.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"op\":\"count\",\"id\":3,\"cl").unwrap();
        drop(f);
        let (mut j, t) = Journal::open(&path, 200).unwrap();
        assert_eq!(t.total(), 2);
        j.append(&count(3, "NGS")).unwrap();
        drop(j);
        let (_, t) = Journal::open(&path, 200).unwrap();
        assert_eq!(t.counts().values().sum::<u64>(), 3);
    }

    #[test]
    fn a_journal_is_held_by_one_run_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        let (mut first, _) = Journal::open(&path, 200).unwrap();
        first.append(&count(1, "BLA")).unwrap();
        // The first run is in the middle of its next write when a second one starts.
        let mut raw = OpenOptions::new().append(true).open(&path).unwrap();
        raw.write_all(b"{\"op\":\"count\",\"id\":2,").unwrap();
        let len = std::fs::metadata(&path).unwrap().len();
        let err = Journal::open(&path, 200).err().unwrap().to_string();
        assert!(
            err.ends_with("journal.jsonl: another marrowscope run is counting into this journal now; let it end (or stop it) first, or give this run another --report folder"),
            "{err}"
        );
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            len,
            "the first run's half-written line is not cut off"
        );
        raw.write_all(b"\"class\":\"LYT\",\"p\":0.9,\"frame\":0,\"x\":1.0,\"y\":1.0}\n")
            .unwrap();
        drop(first);
        let (_, tally) = Journal::open(&path, 200).unwrap();
        assert_eq!(
            tally.total(),
            2,
            "once the first run ends, the next resumes its count"
        );
    }

    #[test]
    fn corrupt_middle_line_names_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        let first = serde_json::to_string(&count(1, "BLA")).unwrap();
        std::fs::write(&path, format!("{first}\nnot json\n{first}\n")).unwrap();
        let err = Journal::open(&path, 200).err().unwrap().to_string();
        assert!(err.contains("journal.jsonl:2:"), "{err}");
        // Bytes that are not text (a picture saved over the journal) are named so, at their line.
        let mut bytes = format!("{first}\n").into_bytes();
        bytes.extend_from_slice(b"\x89PNG\xFF\n");
        std::fs::write(&path, bytes).unwrap();
        let err = Journal::open(&path, 200).err().unwrap().to_string();
        assert!(
            err.ends_with(
                "journal.jsonl:2: corrupt journal entry: not UTF-8 text (is this a count journal?)"
            ),
            "{err}"
        );
        let err = Journal::open(dir.path(), 200).err().unwrap().to_string();
        assert!(
            err.ends_with("a folder, where the count journal file goes"),
            "{err}"
        );
    }

    #[test]
    fn a_write_torn_inside_a_character_is_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        let start = |source: &str| Entry::Start {
            source: source.into(),
            model: None,
        };
        {
            let (mut j, _) = Journal::open(&path, 200).unwrap();
            j.append(&start("folder /data/Müller")).unwrap();
            j.append(&count(1, "BLA")).unwrap();
        }
        // A crash after the first byte of the "ü" (0xC3 0xBC) of the next run's start entry.
        let torn = serde_json::to_string(&start("folder /data/Müller")).unwrap();
        let cut = torn.find('ü').unwrap() + 1;
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&torn.as_bytes()[..cut]).unwrap();
        drop(f);
        let (j, t) = Journal::open(&path, 200).unwrap();
        assert_eq!((t.total(), j.replayed().len()), (1, 2));
    }

    fn counted_at(id: u64, world: (f32, f32), frame: u64) -> Entry {
        Entry::Count {
            id,
            class: "NGS".into(),
            p: 0.9,
            frame,
            x: world.0,
            y: world.1,
            at: Some(StagePoint {
                frame: frame + 2,
                camera: (world.0 - 100.0, 0.0),
            }),
        }
    }

    fn start(source: &str) -> Entry {
        Entry::Start {
            source: source.into(),
            model: None,
        }
    }

    #[test]
    fn the_model_is_that_of_the_last_start_naming_one_and_older_starts_still_read() {
        let older: Entry = serde_json::from_str(r#"{"op":"start","source":"slide A"}"#).unwrap();
        assert_eq!(older, start("slide A"));
        let by = |model: &str| Entry::Start {
            source: "slide A".into(),
            model: Some(model.into()),
        };
        let line = serde_json::to_string(&by("m-f32")).unwrap();
        assert_eq!(line, r#"{"op":"start","source":"slide A","model":"m-f32"}"#);
        let journal = [by("m-f32"), count(1, "BLA"), by("m-int8"), start("slide A")];
        assert_eq!(last_model(&journal), Some("m-int8"));
        assert_eq!(last_model(&journal[..2]), Some("m-f32"));
        assert_eq!(last_model(&journal[3..]), None);
    }

    #[test]
    fn resume_point_is_the_last_count_of_the_same_source() {
        let journal = [
            start("slide A"),
            counted_at(0, (10.0, 5.0), 3),
            counted_at(1, (50.0, 5.0), 7),
            start("slide A"),
            counted_at(2, (90.0, 5.0), 12),
            Entry::Discard { id: 1 },
        ];
        assert_eq!(last_source(&journal), Some("slide A"));
        assert_eq!(last_source(&journal[1..2]), None);
        let point = resume_point(&journal, "slide A").unwrap();
        assert_eq!(point.at.frame, 14);
        assert_eq!(point.at.camera, (-10.0, 0.0));
        assert_eq!(point.counted, [(10.0, 5.0), (50.0, 5.0), (90.0, 5.0)]);
    }

    #[test]
    fn no_resume_point_for_another_source_or_older_journals() {
        let journal = [start("slide A"), counted_at(0, (10.0, 5.0), 3)];
        assert!(resume_point(&journal, "slide B").is_none());
        // After another source, only what follows it counts.
        let mut switched = journal.to_vec();
        switched.push(start("slide B"));
        switched.push(counted_at(1, (70.0, 5.0), 9));
        switched.push(start("slide A"));
        assert!(
            resume_point(&switched, "slide A").is_none(),
            "slide A has no count since"
        );
        assert_eq!(
            resume_point(&switched[..4], "slide B").unwrap().counted,
            [(70.0, 5.0)]
        );
        // Journals without start entries or stage points (older versions) do not resume a place.
        assert!(resume_point(&[counted_at(0, (1.0, 1.0), 1)], "slide A").is_none());
        assert!(resume_point(&[start("slide A"), count(0, "BLA")], "slide A").is_none());
    }

    #[test]
    fn replayed_entries_leave_out_a_torn_tail_and_later_appends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        let first = counted_at(0, (1.0, 2.0), 3);
        let second = counted_at(1, (5.0, 6.0), 7);
        let lines = [&first, &second].map(|e| serde_json::to_string(e).unwrap());
        std::fs::write(&path, format!("{}\n{}\n{{\"op\":\"co", lines[0], lines[1])).unwrap();
        let (mut journal, tally) = Journal::open(&path, 200).unwrap();
        assert_eq!(journal.replayed(), [first.clone(), second.clone()]);
        assert_eq!(tally.total(), 2);
        journal.append(&counted_at(2, (9.0, 9.0), 8)).unwrap();
        assert_eq!(journal.replayed().len(), 2);
        drop(journal);
        let (_, tally) = Journal::open(&path, 200).unwrap();
        assert_eq!(tally.total(), 3);
    }
}
