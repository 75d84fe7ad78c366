//! Reading the text files a user writes or edits (board profiles, model manifests, YOLO label
//! files): UTF-8, with or without the byte-order mark that some editors (older Windows Notepad,
//! spreadsheet exports) put at the start. The mark is not text: left in, it would be read as part
//! of the first field and refused with an error about something the user cannot see.

use std::path::Path;

/// The byte-order mark as it is decoded from UTF-8.
const BYTE_ORDER_MARK: char = '\u{feff}';

/// How far into a file a NUL byte marks it as binary, not text (as git decides).
const BINARY_SNIFF: usize = 8000;

/// The file's text, without a leading byte-order mark; line and column numbers of errors in it
/// are then those an editor shows. Text that is not UTF-8 is refused with what it is instead
/// (UTF-16, as "Unicode" in Windows Notepad; a binary file such as a picture) or the line of its
/// first byte that is not UTF-8; a folder is named as such.
pub fn read(path: &Path) -> std::io::Result<String> {
    if path.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "a folder, not a file",
        ));
    }
    let bytes = std::fs::read(path)?;
    if bytes.starts_with(&[0xFF, 0xFE]) || bytes.starts_with(&[0xFE, 0xFF]) {
        return Err(not_utf8("saved as UTF-16 text; save it as UTF-8".into()));
    }
    if bytes.iter().take(BINARY_SNIFF).any(|&b| b == 0) {
        return Err(not_utf8(
            "not a text file (a picture or another binary file?)".into(),
        ));
    }
    let mut text = String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = 1 + valid.iter().filter(|&&b| b == b'\n').count();
        not_utf8(format!(
            "line {line} is not UTF-8 text; save the file as UTF-8"
        ))
    })?;
    if text.starts_with(BYTE_ORDER_MARK) {
        text.drain(..BYTE_ORDER_MARK.len_utf8());
    }
    Ok(text)
}

fn not_utf8(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message)
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

    #[test]
    fn text_that_is_not_utf8_says_what_it_is_or_where() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("board.ron");
        let utf16: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain("(\n".bytes().flat_map(|b| [b, 0]))
            .collect();
        std::fs::write(&file, utf16).unwrap();
        let e = read(&file).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("UTF-16"), "{e}");
        // Latin-1: "µm" on the third line
        std::fs::write(&file, b"(\n  name: \"a\",\n  // 0.1 \xB5m\n)").unwrap();
        let e = read(&file).unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 3 is not UTF-8 text; save the file as UTF-8"
        );
        // A picture given where a profile goes (a PNG's signature and header hold NUL bytes).
        let mut png = Vec::new();
        image::RgbImage::new(2, 2)
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        std::fs::write(&file, png).unwrap();
        let e = read(&file).unwrap_err();
        assert_eq!(
            e.to_string(),
            "not a text file (a picture or another binary file?)"
        );
        assert_eq!(
            read(dir.path()).unwrap_err().to_string(),
            "a folder, not a file"
        );
    }
}
