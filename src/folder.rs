//! The folders a user names (replayed frames, labelled frames and their label files): whether a
//! path is a folder at all, the files of one kind in it, and, where it holds none, what it holds
//! instead. A folder one level too high (`images/` holding `train/` and `val/`), the label folder
//! given in place of the pictures, or labels in the other format are the usual slips, and each is
//! named, not reported as an empty folder. Files come in name order with numbers read as numbers
//! (`frame2` before `frame10`), as a replayed folder's order is the order the stage moved in.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

/// Why a path given as a folder is not one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotAFolder {
    Missing,
    File,
}

/// Checks that `path` is a folder.
pub fn check(path: &Path) -> Result<(), NotAFolder> {
    if path.is_dir() {
        Ok(())
    } else if path.exists() {
        Err(NotAFolder::File)
    } else {
        Err(NotAFolder::Missing)
    }
}

/// A kind of file looked for in a folder: what it is called in messages, and the test for it.
pub struct FileKind {
    pub called: &'static str,
    pub is: fn(&Path) -> bool,
}

/// How many of the folder's sub-folders that hold the files sought are named in a message.
const FOLDERS_NAMED: usize = 4;

/// The files of `kind` in `folder`, in name order with numbers by value ([`name_order`]). When there
/// are none, the error says what the folder holds instead: sub-folders that hold such files, or how
/// many files of which other kinds.
pub fn files_of_kind(folder: &Path, kind: &FileKind) -> Result<Vec<PathBuf>, String> {
    let entries = entries(folder).map_err(|e| e.to_string())?;
    let mut files: Vec<PathBuf> = entries.iter().filter(|p| (kind.is)(p)).cloned().collect();
    if files.is_empty() {
        return Err(what_it_holds_instead(&entries, kind));
    }
    files.sort_by(|a, b| name_order(&name_of(a), &name_of(b)));
    Ok(files)
}

/// Name order with each run of digits compared as the number it writes: `frame9` before `frame10`
/// (capture programs often number frames without leading zeros, and a replayed pan taken out of
/// order is counted again at every jump back). Names equal that way (`frame01`, `frame1`) fall back
/// to plain order, so the order is total.
pub fn name_order(a: &str, b: &str) -> Ordering {
    let (mut left, mut right) = (a, b);
    loop {
        match (left.is_empty(), right.is_empty()) {
            (true, true) => return a.cmp(b),
            (true, false) => return Ordering::Less,
            (false, true) => return Ordering::Greater,
            (false, false) => {}
        }
        let (l, l_rest) = first_run(left);
        let (r, r_rest) = first_run(right);
        let order = match (is_number(l), is_number(r)) {
            (true, true) => number_order(l, r),
            _ => l.cmp(r),
        };
        if order != Ordering::Equal {
            return order;
        }
        (left, right) = (l_rest, r_rest);
    }
}

/// The leading run of digits, or of other characters, and the rest.
fn first_run(text: &str) -> (&str, &str) {
    let digits = text.starts_with(|c: char| c.is_ascii_digit());
    let end = text
        .find(|c: char| c.is_ascii_digit() != digits)
        .unwrap_or(text.len());
    text.split_at(end)
}

fn is_number(run: &str) -> bool {
    run.starts_with(|c: char| c.is_ascii_digit())
}

/// Two digit runs by the number they write, of any length (no overflow): leading zeros dropped,
/// then the shorter is smaller, then digit by digit.
fn number_order(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

fn entries(folder: &Path) -> std::io::Result<Vec<PathBuf>> {
    Ok(std::fs::read_dir(folder)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect())
}

fn what_it_holds_instead(entries: &[PathBuf], kind: &FileKind) -> String {
    let none = format!("holds no {}", kind.called);
    let mut folders_with_kind: Vec<String> = entries
        .iter()
        .filter(|p| p.is_dir() && holds_kind(p, kind))
        .map(|p| name_of(p))
        .collect();
    if !folders_with_kind.is_empty() {
        folders_with_kind.sort();
        let more = folders_with_kind.len().saturating_sub(FOLDERS_NAMED);
        folders_with_kind.truncate(FOLDERS_NAMED);
        let and_more = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        return format!(
            "{none}, but its folders {}{and_more} do: give one of them",
            folders_with_kind.join(", ")
        );
    }
    match other_file_kinds(entries).as_slice() {
        [] => format!("{none}: it is empty"),
        kinds => format!("{none}, only {}", kinds.join(", ")),
    }
}

fn holds_kind(folder: &Path, kind: &FileKind) -> bool {
    entries(folder).is_ok_and(|inside| inside.iter().any(|p| (kind.is)(p)))
}

fn name_of(path: &Path) -> String {
    path.file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
}

/// "3 .xml files, 1 other file": the folder's files counted by extension, most common first.
fn other_file_kinds(entries: &[PathBuf]) -> Vec<String> {
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    for file in entries.iter().filter(|p| p.is_file()) {
        let ext = file
            .extension()
            .map(|e| format!(".{}", e.to_string_lossy().to_ascii_lowercase()))
            .unwrap_or_default();
        *counts.entry(ext).or_default() += 1;
    }
    let mut counts: Vec<(String, usize)> = counts.into_iter().collect();
    counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    counts
        .into_iter()
        .map(|(ext, n)| {
            let plural = if n == 1 { "" } else { "s" };
            match ext.as_str() {
                "" => format!("{n} file{plural} without an extension"),
                _ => format!("{n} {ext} file{plural}"),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: FileKind = FileKind {
        called: ".txt files",
        is: |p| p.extension().is_some_and(|e| e == "txt") && p.is_file(),
    };

    #[test]
    fn a_folder_is_told_from_a_file_and_a_missing_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.txt");
        std::fs::write(&file, "").unwrap();
        assert_eq!(check(dir.path()), Ok(()));
        assert_eq!(check(&file), Err(NotAFolder::File));
        assert_eq!(check(&dir.path().join("gone")), Err(NotAFolder::Missing));
    }

    #[test]
    fn the_files_of_a_kind_come_sorted() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b.txt", "a.txt", "c.xml"] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        let files = files_of_kind(dir.path(), &TEXT).unwrap();
        let names: Vec<String> = files.iter().map(|p| name_of(p)).collect();
        assert_eq!(names, ["a.txt", "b.txt"]);
    }

    #[test]
    fn numbers_in_names_are_ordered_by_value() {
        let dir = tempfile::tempdir().unwrap();
        for i in [10, 2, 1, 100, 11, 9] {
            std::fs::write(dir.path().join(format!("frame{i}.txt")), "").unwrap();
        }
        let files = files_of_kind(dir.path(), &TEXT).unwrap();
        let names: Vec<String> = files.iter().map(|p| name_of(p)).collect();
        assert_eq!(
            names,
            [
                "frame1.txt",
                "frame2.txt",
                "frame9.txt",
                "frame10.txt",
                "frame11.txt",
                "frame100.txt"
            ]
        );
    }

    #[test]
    fn name_order_reads_digit_runs_as_numbers_and_is_total() {
        fn sorted<'a>(names: &[&'a str]) -> Vec<&'a str> {
            let mut v = names.to_vec();
            v.sort_by(|a, b| name_order(a, b));
            v
        }
        assert_eq!(
            sorted(&["b2", "a10", "a9", "a", "a9b", "a9a", "10", "9x"]),
            ["9x", "10", "a", "a9", "a9a", "a9b", "a10", "b2"]
        );
        // Zero-padded names keep their order; equal numbers written otherwise fall back to the bytes.
        assert_eq!(
            sorted(&["img_0010.png", "img_0002.png", "img_010.png"]),
            ["img_0002.png", "img_0010.png", "img_010.png"]
        );
        assert_eq!(name_order("f1", "f01"), "f1".cmp("f01"));
        // Digit runs longer than any integer type.
        assert_eq!(
            name_order("x99999999999999999999999", "x100000000000000000000000"),
            Ordering::Less
        );
        // A date and time in the name, unpadded hours.
        assert_eq!(
            sorted(&["2026-12-07 10.05.png", "2026-12-07 9.55.png"]),
            ["2026-12-07 9.55.png", "2026-12-07 10.05.png"]
        );
    }

    #[test]
    fn a_folder_without_the_kind_says_what_it_holds_instead() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        assert_eq!(
            files_of_kind(root, &TEXT).unwrap_err(),
            "holds no .txt files: it is empty"
        );
        for name in ["a.XML", "b.xml", "README"] {
            std::fs::write(root.join(name), "").unwrap();
        }
        assert_eq!(
            files_of_kind(root, &TEXT).unwrap_err(),
            "holds no .txt files, only 2 .xml files, 1 file without an extension"
        );
        for split in ["val", "train", "notes"] {
            std::fs::create_dir(root.join(split)).unwrap();
        }
        std::fs::write(root.join("train/a.txt"), "").unwrap();
        std::fs::write(root.join("val/b.txt"), "").unwrap();
        assert_eq!(
            files_of_kind(root, &TEXT).unwrap_err(),
            "holds no .txt files, but its folders train, val do: give one of them"
        );
        for i in 0..5 {
            let split = root.join(format!("part{i}"));
            std::fs::create_dir(&split).unwrap();
            std::fs::write(split.join("a.txt"), "").unwrap();
        }
        assert_eq!(
            files_of_kind(root, &TEXT).unwrap_err(),
            "holds no .txt files, but its folders part0, part1, part2, part3 and 3 more do: give one of them"
        );
    }
}
