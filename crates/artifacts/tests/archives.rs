//! Packing and unpacking on real files: determinism and .gitignore, dedup in the store, and
//! every way an archive can try to write outside its directory or grow past its limits,
//! each refused with nothing left behind.

use liftoff_artifacts::{
    pack_dir, unpack, ArchiveError, ArtifactStore, Digest, Limits, LocalStore,
};
use std::path::Path;

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// One crafted entry: name, type, content, link target.
type Raw<'a> = (&'a str, tar::EntryType, &'a [u8], Option<&'a str>);

/// A tar.gz whose entries are written header by header, names unchecked, as an attacker would.
fn evil(entries: &[Raw]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    for (name, kind, data, link) in entries {
        let mut h = tar::Header::new_old();
        let raw = &mut h.as_old_mut().name;
        raw[..name.len()].copy_from_slice(name.as_bytes());
        h.set_entry_type(*kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        if let Some(link) = link {
            let raw = &mut h.as_old_mut().linkname;
            raw[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

/// Unpacks and expects a refusal; checks that nothing was left, inside or beside the target.
fn refused(archive: &[u8], limits: Limits) -> ArchiveError {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("cache").join("job");
    let err = unpack(archive, &dest, limits).expect_err("the archive must be refused");
    assert!(!dest.exists(), "a refused archive left its target behind");
    let left: Vec<_> = std::fs::read_dir(dir.path().join("cache"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "a refused archive left {left:?}");
    let outside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        outside,
        vec!["cache"],
        "something was written outside the cache"
    );
    err
}

#[test]
fn packing_is_deterministic_and_honours_gitignore() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    write(&src.join("train.py"), "print(1)\n");
    write(&src.join("lib/model.py"), "x = 1\n");
    write(&src.join(".gitignore"), "*.ckpt\ndata/\n");
    write(&src.join("big.ckpt"), "weights");
    write(&src.join("data/set.csv"), "a,b\n");
    write(&src.join(".git/HEAD"), "ref: refs/heads/main\n");
    let a = pack_dir(&src).unwrap();
    // Same content, other times: same bytes.
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(src.join("train.py"), "print(1)\n").unwrap();
    let b = pack_dir(&src).unwrap();
    assert_eq!(a.sha256, b.sha256);
    assert_eq!(a.files, 3, "train.py, lib/model.py and .gitignore");
    let out = dir.path().join("out");
    unpack(&a.bytes[..], &out, Limits::default()).unwrap();
    assert_eq!(
        std::fs::read_to_string(out.join("lib/model.py")).unwrap(),
        "x = 1\n"
    );
    assert!(
        !out.join("big.ckpt").exists() && !out.join("data").exists() && !out.join(".git").exists()
    );
    // A change of content is a new digest.
    std::fs::write(src.join("train.py"), "print(2)\n").unwrap();
    assert_ne!(pack_dir(&src).unwrap().sha256, a.sha256);
}

#[test]
fn the_store_keeps_one_blob_per_content() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    write(&src.join("train.py"), "print(1)\n");
    let store = LocalStore::new(&dir.path().join("blobs"));
    let (d1, new1) = store.put(&pack_dir(&src).unwrap().bytes).unwrap();
    let (d2, new2) = store.put(&pack_dir(&src).unwrap().bytes).unwrap();
    assert_eq!(d1, d2);
    assert!(new1 && !new2, "the second upload is not a new blob");
    let blobs = walk_files(&dir.path().join("blobs"));
    assert_eq!(blobs, 1);
    assert!(store.get(&d1).unwrap().is_some());
    let missing: Digest = "0".repeat(64).parse().unwrap();
    assert!(store.get(&missing).unwrap().is_none());
    for bad in ["../../etc/passwd", "ABC", &"g".repeat(64), ""] {
        assert!(
            bad.parse::<Digest>().is_err(),
            "{bad:?} accepted as a digest"
        );
    }
}

fn walk_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                walk_files(&e.path())
            } else {
                1
            }
        })
        .sum()
}

#[test]
fn tar_slip_and_absolute_paths_are_refused() {
    use tar::EntryType::Regular;
    for name in ["../evil.sh", "ok/../../evil.sh", "/tmp/evil.sh"] {
        let archive = evil(&[
            ("fine.txt", Regular, b"ok", None),
            (name, Regular, b"pwned", None),
        ]);
        let err = refused(&archive, Limits::default());
        assert!(matches!(err, ArchiveError::Refused { .. }), "{name}: {err}");
    }
}

#[test]
fn links_leading_outside_are_refused() {
    use tar::EntryType::{Link, Regular, Symlink};
    let cases: Vec<Vec<Raw>> = vec![
        vec![("etc", Symlink, b"", Some("/etc"))],
        vec![("up", Symlink, b"", Some("../.."))],
        vec![("a/b", Symlink, b"", Some("../../x"))],
        // A link inside, then a write through it: never followed.
        vec![
            ("dir", Symlink, b"", Some(".")),
            ("dir/x", Regular, b"x", None),
        ],
        // A hard link to a file outside.
        vec![("passwd", Link, b"", Some("/etc/passwd"))],
    ];
    for entries in cases {
        let err = refused(&evil(&entries), Limits::default());
        assert!(
            matches!(err, ArchiveError::Refused { .. }),
            "{entries:?}: {err}"
        );
    }
    // A link that stays inside is kept.
    let dir = tempfile::tempdir().unwrap();
    let ok = evil(&[
        ("README.md", Regular, b"hi", None),
        ("docs/README.md", Symlink, b"", Some("../README.md")),
    ]);
    unpack(&ok[..], &dir.path().join("t"), Limits::default()).unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("t/docs/README.md")).unwrap(),
        "hi"
    );
}

#[test]
fn oversized_archives_are_refused() {
    use tar::EntryType::Regular;
    let big = vec![b'a'; 4096];
    let limits = Limits {
        max_bytes: 10_000,
        max_file: 5_000,
        max_entries: 10,
    };
    // One file over the per-file limit.
    let one = evil(&[("big", Regular, &vec![b'a'; 6000], None)]);
    assert!(matches!(
        refused(&one, limits),
        ArchiveError::Refused { .. }
    ));
    // Files under the per-file limit that add up past the total (compressing to little).
    let many: Vec<Raw> = ["a", "b", "c"]
        .iter()
        .map(|n| (*n, Regular, &big[..], None))
        .collect();
    assert!(matches!(
        refused(&evil(&many), limits),
        ArchiveError::TooLarge { .. }
    ));
    // Too many entries.
    let names: Vec<String> = (0..11).map(|i| format!("f{i}")).collect();
    let lots: Vec<_> = names
        .iter()
        .map(|n| (n.as_str(), Regular, &b"x"[..], None))
        .collect();
    assert!(matches!(
        refused(&evil(&lots), limits),
        ArchiveError::TooManyEntries(10)
    ));
}

#[test]
fn garbage_and_duplicates_are_refused() {
    use tar::EntryType::{Fifo, Regular};
    assert!(matches!(
        refused(b"not a gzip stream at all", Limits::default()),
        ArchiveError::Malformed(_)
    ));
    let twice = evil(&[("a", Regular, b"1", None), ("a", Regular, b"2", None)]);
    assert!(matches!(
        refused(&twice, Limits::default()),
        ArchiveError::Refused { .. }
    ));
    let fifo = evil(&[("pipe", Fifo, b"", None)]);
    assert!(matches!(
        refused(&fifo, Limits::default()),
        ArchiveError::Refused { .. }
    ));
}

#[test]
fn an_existing_target_is_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("t");
    std::fs::create_dir(&dest).unwrap();
    let archive = evil(&[("a", tar::EntryType::Regular, b"1", None)]);
    assert!(matches!(
        unpack(&archive[..], &dest, Limits::default()),
        Err(ArchiveError::Exists(_))
    ));
}
