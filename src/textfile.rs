//! Reading the text files a user writes or edits (board profiles, model manifests, YOLO label
//! files): UTF-8, with or without the byte-order mark that some editors (older Windows Notepad,
//! spreadsheet exports) put at the start. The mark is not text: left in, it would be read as part
//! of the first field and refused with an error about something the user cannot see.

use std::path::Path;

/// The byte-order mark as it is decoded from UTF-8.
const BYTE_ORDER_MARK: char = '\u{feff}';

/// The file's text, without a leading byte-order mark; line and column numbers of errors in it
/// are then those an editor shows.
pub fn read(path: &Path) -> std::io::Result<String> {
    let mut text = std::fs::read_to_string(path)?;
    if text.starts_with(BYTE_ORDER_MARK) {
        text.drain(..BYTE_ORDER_MARK.len_utf8());
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leading_byte_order_mark_is_dropped_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("label.txt");
        for (written, read_back) in [
            ("\u{feff}1 0.5 0.5 0.2 0.2\r\n", "1 0.5 0.5 0.2 0.2\r\n"),
            ("0 0.5\u{feff}", "0 0.5\u{feff}"),
            ("\u{feff}", ""),
            ("", ""),
        ] {
            std::fs::write(&file, written).unwrap();
            assert_eq!(read(&file).unwrap(), read_back);
        }
    }
}
