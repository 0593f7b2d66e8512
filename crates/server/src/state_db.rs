//! What Siphon keeps across a restart or a crash, in one SQLite file (`[registrar] store`):
//! the registrar's bindings, and a journal of the calls that are up, so that the next start
//! can count the calls a crash cut off.
//!
//! # Why SQLite (rusqlite, bundled)
//!
//! redb would do the storing as well, but an operator can open an SQLite file with the
//! `sqlite3` shell they already have: look at the bindings with a `SELECT`, and back the
//! file up while Siphon runs (`sqlite3 registrations.db ".backup copy.db"`, which reads a
//! consistent snapshot thanks to WAL). `bundled` compiles the SQLite it was tested with
//! into the binary, so nothing depends on the host's library version.
//!
//! # Off the SIP task
//!
//! The SIP task never touches the disk. A change is put into a small map of pending
//! changes (one entry per AOR or call, the newest winning) under a mutex held for a map
//! insert, and a writer thread of its own takes the whole map and writes it in one
//! transaction. The map is bounded by the number of AORs and calls, never by the rate of
//! changes: a burst of refreshes of one AOR is one row written. A crash (`kill -9`) loses
//! only what was pending, normally the changes of the last few milliseconds.
//!
//! Durability: WAL with `synchronous = NORMAL`: a committed transaction survives the
//! process dying at any moment; a power cut may lose the last transactions (not corrupt
//! the file). A second Siphon on the same file is refused at start (a lock file beside
//! it), since two registrars writing one table would each overwrite the other's AORs.
//!
//! A leaf: imports nothing from the crate.

use std::collections::HashMap;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::fcntl::{Flock, FlockArg};
use rusqlite::{Connection, params};
use siphon_sip::peer::{Peer, Transport};
use siphon_sip::registrar::{Binding, LocationStore, MemoryLocationStore};
use tracing::warn;

/// The schema this code writes; an older file is migrated, a newer one refused.
const SCHEMA_VERSION: i64 = 1;
/// How often the writer deletes bindings that expired without a refresh (the SIP task
/// forgets them from memory on its own housekeeping; this keeps the file small).
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Opening the store failed; the message names the file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Sql {
        path: String,
        source: rusqlite::Error,
    },
    #[error("{path}: another Siphon is using this store (its lock file {lock} is held)")]
    Locked { path: String, lock: String },
    #[error("{path}: written by a newer Siphon (schema {found}, this one knows {SCHEMA_VERSION})")]
    NewerSchema { path: String, found: i64 },
}

/// Bindings by AOR, as the registrar's store holds them.
pub type AorBindings = Vec<(String, Vec<Binding>)>;

/// What the previous process left behind.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Unexpired bindings by AOR, with the time they had left.
    pub bindings: AorBindings,
    /// Bindings in the file that had expired while Siphon was down (dropped).
    pub expired: u64,
    /// Calls that were up when the previous process stopped without ending them (a crash,
    /// `kill -9`, a power cut): their journal rows were still there.
    pub calls_cut_off: u64,
}

/// One binding as stored: the expiry as wall-clock time, since an `Instant` means
/// nothing to the next process.
#[derive(Debug, Clone)]
struct Row {
    contact: String,
    expires_unix_ms: i64,
    call_id: String,
    cseq: u32,
    source: String,
    transport: &'static str,
    q: Option<f32>,
    user_agent: Option<String>,
}

#[derive(Debug, Default)]
struct Pending {
    /// AOR -> its whole binding list (empty: remove the AOR).
    bindings: HashMap<String, Vec<Row>>,
    /// Call-ID -> Some(start, unix ms): the call is up; None: it ended.
    calls: HashMap<String, Option<i64>>,
    closing: bool,
}

#[derive(Debug, Default)]
struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A panic in the writer while holding the lock leaves plain data behind, still
        // usable: keep going rather than take the SIP task down too.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The open store: hands changes to its writer thread. [`StateDb::close`] (or dropping
/// it) writes what is pending and waits for the thread.
#[derive(Debug)]
pub struct StateDb {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Held (locked) while this process uses the store.
    _lock: Flock<File>,
}

impl StateDb {
    /// Opens (creating the file and its directory) and reads what the previous process
    /// left: the bindings not yet expired, and the count of calls it left up (the journal
    /// is then cleared for this process).
    pub fn open(path: &Path) -> Result<(StateDb, Loaded), StateError> {
        let shown = path.display().to_string();
        let io = |source| StateError::Io {
            path: shown.clone(),
            source,
        };
        let sql = |source| StateError::Sql {
            path: shown.clone(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let lock_path = lock_path(path);
        let lock_file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io)?;
        // flock(2) through nix rather than `File::try_lock`, which needs Rust 1.89 (the
        // container builds with 1.88). Released when the process ends, however it ends.
        let lock = match Flock::lock(lock_file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                return Err(StateError::Locked {
                    path: shown,
                    lock: lock_path.display().to_string(),
                });
            }
            Err((_, errno)) => return Err(io(std::io::Error::from(errno))),
        };
        let mut conn = Connection::open(path).map_err(sql)?;
        prepare(&conn, &shown)?;
        let loaded = load(&mut conn).map_err(sql)?;
        let shared = Arc::new(Shared::default());
        let thread_shared = shared.clone();
        let thread_path = shown.clone();
        let thread = std::thread::Builder::new()
            .name("siphon-state".into())
            .spawn(move || write_loop(conn, &thread_shared, &thread_path))
            .map_err(io)?;
        Ok((
            StateDb {
                shared,
                thread: Mutex::new(Some(thread)),
                _lock: lock,
            },
            loaded,
        ))
    }

    /// The AOR's binding list is now `bindings` (empty: unregistered).
    pub fn bindings_changed(&self, aor: &str, bindings: &[Binding]) {
        let (now_i, now_unix) = (Instant::now(), unix_ms(SystemTime::now()));
        let rows = bindings.iter().map(|b| row(b, now_i, now_unix)).collect();
        self.shared.lock().bindings.insert(aor.to_string(), rows);
        self.shared.wake.notify_one();
    }

    /// A call is up (it counts as cut off if the process dies before [`Self::call_ended`]).
    pub fn call_started(&self, call_id: &str) {
        let start = unix_ms(SystemTime::now());
        self.shared
            .lock()
            .calls
            .insert(call_id.to_string(), Some(start));
        self.shared.wake.notify_one();
    }

    pub fn call_ended(&self, call_id: &str) {
        let mut pending = self.shared.lock();
        // Started and ended before the writer saw it: nothing to write at all.
        if let Some(Some(_)) = pending.calls.get(call_id) {
            pending.calls.remove(call_id);
            return;
        }
        pending.calls.insert(call_id.to_string(), None);
        drop(pending);
        self.shared.wake.notify_one();
    }

    /// Writes everything pending and stops the writer thread. Idempotent.
    pub fn close(&self) {
        self.shared.lock().closing = true;
        self.shared.wake.notify_one();
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread
            && thread.join().is_err()
        {
            warn!("the state writer thread panicked");
        }
    }
}

impl Drop for StateDb {
    fn drop(&mut self) {
        self.close();
    }
}

/// `registrations.db` -> `registrations.db.lock`.
fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

fn prepare(conn: &Connection, shown: &str) -> Result<(), StateError> {
    let sql = |source| StateError::Sql {
        path: shown.to_string(),
        source,
    };
    // WAL: readers (a `.backup`) never block the writer; NORMAL: a commit survives the
    // process dying, without an fsync per transaction. A busy timeout covers a backup
    // holding the file briefly.
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(sql)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(sql)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(sql)?;
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(sql)?;
    if version > SCHEMA_VERSION {
        return Err(StateError::NewerSchema {
            path: shown.to_string(),
            found: version,
        });
    }
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS bindings (
             aor TEXT NOT NULL,
             contact TEXT NOT NULL,
             expires_unix_ms INTEGER NOT NULL,
             call_id TEXT NOT NULL,
             cseq INTEGER NOT NULL,
             source TEXT NOT NULL,
             transport TEXT NOT NULL,
             q REAL,
             user_agent TEXT,
             PRIMARY KEY (aor, contact)
         );
         CREATE INDEX IF NOT EXISTS bindings_expiry ON bindings (expires_unix_ms);
         CREATE TABLE IF NOT EXISTS active_calls (
             call_id TEXT PRIMARY KEY,
             start_unix_ms INTEGER NOT NULL
         );
         PRAGMA user_version = 1;",
    )
    .map_err(sql)
}

fn load(conn: &mut Connection) -> rusqlite::Result<Loaded> {
    let now_unix = unix_ms(SystemTime::now());
    let now = Instant::now();
    let tx = conn.transaction()?;
    let expired = tx.execute(
        "DELETE FROM bindings WHERE expires_unix_ms <= ?1",
        params![now_unix],
    )? as u64;
    let mut by_aor: AorBindings = Vec::new();
    {
        let mut stmt = tx.prepare(
            "SELECT aor, contact, expires_unix_ms, call_id, cseq, source, transport, q, user_agent
             FROM bindings ORDER BY aor, contact",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let aor: String = r.get(0)?;
            let source: String = r.get(5)?;
            let transport: String = r.get(6)?;
            let Some(peer) = peer(&source, &transport) else {
                warn!(%aor, %source, %transport, "stored binding with an unreadable source: dropped");
                continue;
            };
            let expires_unix_ms: i64 = r.get(2)?;
            let left = u64::try_from(expires_unix_ms - now_unix).unwrap_or(0);
            let binding = Binding {
                contact: r.get(1)?,
                expires_at: now + Duration::from_millis(left),
                call_id: r.get(3)?,
                cseq: r.get(4)?,
                source: peer,
                q: r.get::<_, Option<f64>>(7)?.map(|q| q as f32),
                user_agent: r.get(8)?,
            };
            match by_aor.last_mut() {
                Some((last, list)) if *last == aor => list.push(binding),
                _ => by_aor.push((aor, vec![binding])),
            }
        }
    }
    let calls_cut_off = tx.execute("DELETE FROM active_calls", [])? as u64;
    tx.commit()?;
    Ok(Loaded {
        bindings: by_aor,
        expired,
        calls_cut_off,
    })
}

/// The writer thread: takes whatever is pending, writes it in one transaction, repeats;
/// after `close`, writes the rest and returns.
fn write_loop(mut conn: Connection, shared: &Shared, path: &str) {
    let mut last_prune = Instant::now();
    loop {
        let (batch, closing) = {
            let mut pending = shared.lock();
            while pending.bindings.is_empty() && pending.calls.is_empty() && !pending.closing {
                let (guard, _) = shared
                    .wake
                    .wait_timeout(pending, PRUNE_EVERY)
                    .unwrap_or_else(PoisonError::into_inner);
                pending = guard;
                if last_prune.elapsed() >= PRUNE_EVERY {
                    break;
                }
            }
            let closing = pending.closing;
            (std::mem::take(&mut *pending), closing)
        };
        let prune = last_prune.elapsed() >= PRUNE_EVERY;
        if prune {
            last_prune = Instant::now();
        }
        if let Err(e) = write_batch(&mut conn, &batch, prune) {
            // The next change of the same AOR rewrites it whole; a lost journal row only
            // makes the cut-off count after a crash approximate.
            warn!(%path, error = %e, "cannot write the registrar store");
        }
        if closing {
            return;
        }
    }
}

fn write_batch(conn: &mut Connection, batch: &Pending, prune: bool) -> rusqlite::Result<()> {
    if batch.bindings.is_empty() && batch.calls.is_empty() && !prune {
        return Ok(());
    }
    let tx = conn.transaction()?;
    {
        let mut delete = tx.prepare_cached("DELETE FROM bindings WHERE aor = ?1")?;
        let mut insert = tx.prepare_cached(
            "INSERT OR REPLACE INTO bindings
             (aor, contact, expires_unix_ms, call_id, cseq, source, transport, q, user_agent)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        for (aor, rows) in &batch.bindings {
            delete.execute(params![aor])?;
            for r in rows {
                insert.execute(params![
                    aor,
                    r.contact,
                    r.expires_unix_ms,
                    r.call_id,
                    r.cseq,
                    r.source,
                    r.transport,
                    r.q.map(f64::from),
                    r.user_agent
                ])?;
            }
        }
        let mut up = tx.prepare_cached(
            "INSERT OR REPLACE INTO active_calls (call_id, start_unix_ms) VALUES (?1, ?2)",
        )?;
        let mut down = tx.prepare_cached("DELETE FROM active_calls WHERE call_id = ?1")?;
        for (call_id, start) in &batch.calls {
            match start {
                Some(start) => up.execute(params![call_id, start])?,
                None => down.execute(params![call_id])?,
            };
        }
        if prune {
            tx.execute(
                "DELETE FROM bindings WHERE expires_unix_ms <= ?1",
                params![unix_ms(SystemTime::now())],
            )?;
        }
    }
    tx.commit()
}

fn row(b: &Binding, now: Instant, now_unix: i64) -> Row {
    let left = b.expires_at.saturating_duration_since(now).as_millis();
    Row {
        contact: b.contact.clone(),
        expires_unix_ms: now_unix.saturating_add(i64::try_from(left).unwrap_or(i64::MAX)),
        call_id: b.call_id.clone(),
        cseq: b.cseq,
        source: b.source.addr.to_string(),
        transport: b.source.transport.via_token(),
        q: b.q,
        user_agent: b.user_agent.clone(),
    }
}

fn peer(source: &str, transport: &str) -> Option<Peer> {
    let addr: SocketAddr = source.parse().ok()?;
    let transport = match transport {
        "UDP" => Transport::Udp,
        "TCP" => Transport::Tcp,
        "TLS" => Transport::Tls,
        _ => return None,
    };
    Some(Peer::new(addr, transport))
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The registrar's [`LocationStore`] when `[registrar] store` is set: answers from memory
/// (lookups never touch the disk) and hands every change to the [`StateDb`].
#[derive(Debug)]
pub struct PersistentLocationStore {
    memory: MemoryLocationStore,
    db: Arc<StateDb>,
}

impl PersistentLocationStore {
    /// Starts from what [`StateDb::open`] loaded.
    pub fn new(db: Arc<StateDb>, loaded: AorBindings) -> Self {
        let memory = MemoryLocationStore::new();
        for (aor, bindings) in loaded {
            memory.set_bindings(&aor, bindings);
        }
        PersistentLocationStore { memory, db }
    }
}

impl LocationStore for PersistentLocationStore {
    fn bindings(&self, aor: &str, now: Instant) -> Vec<Binding> {
        self.memory.bindings(aor, now)
    }

    fn set_bindings(&self, aor: &str, bindings: Vec<Binding>) {
        self.db.bindings_changed(aor, &bindings);
        self.memory.set_bindings(aor, bindings);
    }

    /// Memory only: the file's expired rows are never loaded and the writer prunes them.
    fn purge_expired(&self, now: Instant) -> usize {
        self.memory.purge_expired(now)
    }

    fn all(&self, now: Instant) -> Vec<(String, Vec<Binding>)> {
        self.memory.all(now)
    }

    fn count(&self, now: Instant) -> usize {
        self.memory.count(now)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("siphon-state-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn binding(contact: &str, expires_in: Duration, transport: Transport) -> Binding {
        Binding {
            contact: contact.into(),
            expires_at: Instant::now() + expires_in,
            call_id: "reg-1@phone".into(),
            cseq: 7,
            source: Peer::new("192.0.2.10:5062".parse().unwrap(), transport),
            q: Some(0.5),
            user_agent: Some("SIPp".into()),
        }
    }

    #[test]
    fn bindings_round_trip_with_the_time_they_had_left() {
        let d = dir("round-trip");
        let path = d.join("sub").join("registrations.db");
        {
            let (db, loaded) = StateDb::open(&path).unwrap();
            assert!(loaded.bindings.is_empty());
            let db = Arc::new(db);
            let store = PersistentLocationStore::new(db.clone(), loaded.bindings);
            store.set_bindings(
                "1002",
                vec![
                    binding(
                        "sip:1002@192.0.2.10:5062",
                        Duration::from_secs(600),
                        Transport::Udp,
                    ),
                    binding(
                        "sip:1002@192.0.2.11:5062;transport=tcp",
                        Duration::from_secs(120),
                        Transport::Tcp,
                    ),
                ],
            );
            store.set_bindings(
                "1001",
                vec![binding(
                    "sip:1001@192.0.2.12",
                    Duration::from_secs(300),
                    Transport::Udp,
                )],
            );
            // Unregistered: must not come back.
            store.set_bindings("1001", Vec::new());
            db.close();
        }
        let (_db, loaded) = StateDb::open(&path).unwrap();
        assert_eq!(loaded.bindings.len(), 1, "{:?}", loaded.bindings);
        let (aor, list) = &loaded.bindings[0];
        assert_eq!(aor, "1002");
        assert_eq!(list.len(), 2);
        let udp = list
            .iter()
            .find(|b| b.source.transport == Transport::Udp)
            .unwrap();
        assert_eq!(udp.contact, "sip:1002@192.0.2.10:5062");
        assert_eq!(udp.call_id, "reg-1@phone");
        assert_eq!(udp.cseq, 7);
        assert_eq!(udp.source.addr, "192.0.2.10:5062".parse().unwrap());
        assert_eq!(udp.q, Some(0.5));
        assert_eq!(udp.user_agent.as_deref(), Some("SIPp"));
        let left = udp.expires_at.saturating_duration_since(Instant::now());
        assert!(
            left > Duration::from_secs(590) && left <= Duration::from_secs(600),
            "{left:?}"
        );
        let tcp = list
            .iter()
            .find(|b| b.source.transport == Transport::Tcp)
            .unwrap();
        let left = tcp.expires_at.saturating_duration_since(Instant::now());
        assert!(
            left > Duration::from_secs(110) && left <= Duration::from_secs(120),
            "{left:?}"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn expired_bindings_are_dropped_on_load() {
        let d = dir("expiry");
        let path = d.join("registrations.db");
        {
            let (db, _) = StateDb::open(&path).unwrap();
            db.bindings_changed(
                "short",
                &[binding(
                    "sip:short@192.0.2.1",
                    Duration::from_millis(300),
                    Transport::Udp,
                )],
            );
            db.bindings_changed(
                "long",
                &[binding(
                    "sip:long@192.0.2.2",
                    Duration::from_secs(60),
                    Transport::Udp,
                )],
            );
            db.close();
        }
        // Down for longer than the short binding had left.
        std::thread::sleep(Duration::from_millis(400));
        let (_db, loaded) = StateDb::open(&path).unwrap();
        let aors: Vec<&str> = loaded.bindings.iter().map(|(a, _)| a.as_str()).collect();
        assert_eq!(aors, ["long"]);
        assert_eq!(loaded.expired, 1);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn calls_left_up_are_counted_once_at_the_next_start() {
        let d = dir("calls");
        let path = d.join("registrations.db");
        {
            let (db, loaded) = StateDb::open(&path).unwrap();
            assert_eq!(loaded.calls_cut_off, 0);
            for i in 0..5 {
                db.call_started(&format!("call-{i}"));
            }
            db.close();
            // Written, then ended: their rows go.
            db.call_ended("call-0");
        }
        {
            // The close above already stopped the writer, so call-0's end never reached
            // the file: as after a crash, 5 calls count as cut off.
            let (db, loaded) = StateDb::open(&path).unwrap();
            assert_eq!(loaded.calls_cut_off, 5);
            db.call_started("a");
            db.call_started("b");
            db.call_ended("a");
            db.close();
        }
        let (_db, loaded) = StateDb::open(&path).unwrap();
        assert_eq!(loaded.calls_cut_off, 1, "only b was still up");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_second_process_on_the_same_file_is_refused() {
        let d = dir("lock");
        let path = d.join("registrations.db");
        let (db, _) = StateDb::open(&path).unwrap();
        assert!(matches!(
            StateDb::open(&path),
            Err(StateError::Locked { .. })
        ));
        drop(db);
        assert!(StateDb::open(&path).is_ok());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
