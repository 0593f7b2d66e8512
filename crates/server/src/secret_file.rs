//! A key kept in a file so that it outlives the process (the key signing digest nonces):
//! read when the file exists, created with random bytes (mode 0600) when it does not. A
//! leaf: imports nothing from the crate.

use std::io::{self, Write};
use std::path::Path;

/// The key's length in bytes (what HMAC-SHA256 wants).
pub const KEY_LEN: usize = 32;

/// Reads the key at `path`, or creates the file with a fresh random key. A file of another
/// length is an error (it is not ours, or was truncated), never silently replaced.
pub fn load_or_create(path: &Path) -> io::Result<[u8; KEY_LEN]> {
    let context = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    match std::fs::read(path) {
        Ok(bytes) => <[u8; KEY_LEN]>::try_from(bytes.as_slice()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: a key file holds {KEY_LEN} bytes, this one {}",
                    path.display(),
                    bytes.len()
                ),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // The default configuration keeps the key in a state directory of its own,
            // which the first start creates.
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(context)?;
            }
            let mut key = [0u8; KEY_LEN];
            rand::fill(&mut key);
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(path).map_err(context)?;
            file.write_all(&key).map_err(context)?;
            file.sync_all().map_err(context)?;
            Ok(key)
        }
        Err(e) => Err(context(e)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn created_once_then_read_back() {
        let dir = std::env::temp_dir().join(format!("siphon-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("nonce.key");
        let _ = std::fs::remove_file(&path);
        let first = load_or_create(&path).unwrap();
        assert_eq!(load_or_create(&path).unwrap(), first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, b"short").unwrap();
        assert!(load_or_create(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
