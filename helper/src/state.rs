//! The helper's two state files (DESIGN.md §3): the route ledger (what is
//! installed, `routes.rs`) and the desired tunnels (what the user asked for,
//! restored after a crash or reboot, as Tailscale restores `WantRunning`).
//!
//! Both are XML plists an operator can read, written atomically, and a file
//! that does not parse is moved aside and logged, never fatal.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use plist::{Dictionary, Value};
use ztun_proto::{TunnelName, TunnelSpec};

/// What was found when a state file was opened, for the caller to log.
#[derive(Debug, PartialEq, Eq)]
pub enum Loaded<T> {
    Fresh,
    Loaded(T),
    /// The file did not parse; it was moved to `moved_to`.
    Corrupt {
        moved_to: PathBuf,
        reason: String,
    },
}

impl<T> Loaded<T> {
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Loaded<U> {
        match self {
            Loaded::Fresh => Loaded::Fresh,
            Loaded::Loaded(t) => Loaded::Loaded(f(t)),
            Loaded::Corrupt { moved_to, reason } => Loaded::Corrupt { moved_to, reason },
        }
    }
}

/// One plist file in the state directory.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
    /// Permission bits for the file (0600 when it holds credentials).
    mode: u32,
}

impl StateFile {
    pub fn new(state_dir: &Path, name: &str, mode: u32) -> Self {
        Self {
            path: state_dir.join(name),
            mode,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads and decodes the file; a file that fails either step is moved
    /// aside as `<name>.corrupt-<unix time>`.
    pub fn load<T>(
        &self,
        decode: impl FnOnce(&Value) -> Result<T, String>,
    ) -> io::Result<Loaded<T>> {
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Loaded::Fresh),
            Err(e) => return Err(e),
        };
        let decoded = Value::from_reader(io::Cursor::new(bytes))
            .map_err(|e| e.to_string())
            .and_then(|v| decode(&v));
        match decoded {
            Ok(t) => Ok(Loaded::Loaded(t)),
            Err(reason) => {
                let stamp = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs();
                let mut aside = self.path.clone().into_os_string();
                aside.push(format!(".corrupt-{stamp}"));
                let moved_to = PathBuf::from(aside);
                fs::rename(&self.path, &moved_to)?;
                Ok(Loaded::Corrupt { moved_to, reason })
            }
        }
    }

    /// Loads a list, reporting how many items it held.
    pub fn load_list<T>(
        &self,
        decode: impl FnOnce(&Value) -> Result<Vec<T>, String>,
    ) -> io::Result<(Vec<T>, Loaded<usize>)> {
        Ok(match self.load(decode)? {
            Loaded::Loaded(items) => {
                let n = items.len();
                (items, Loaded::Loaded(n))
            }
            Loaded::Fresh => (Vec::new(), Loaded::Fresh),
            Loaded::Corrupt { moved_to, reason } => {
                (Vec::new(), Loaded::Corrupt { moved_to, reason })
            }
        })
    }

    /// Writes `value` atomically: temp file (created with the file's mode),
    /// fsync, rename, fsync of the directory, so a reader or the next start
    /// after a power cut sees the old file or the new one, never a mix.
    pub fn save(&self, value: &Value) -> io::Result<()> {
        let mut bytes = Vec::new();
        value.to_writer_xml(&mut bytes).map_err(io::Error::other)?;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir)?;
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(self.mode)
            .open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, &self.path)?;
        File::open(dir)?.sync_all()
    }
}

/// Reads the `{"v": 1, key: [...]}` envelope both files share.
pub fn versioned_list<'a>(value: &'a Value, key: &str) -> Result<&'a [Value], String> {
    let d = value.as_dictionary().ok_or("not a dictionary")?;
    match d.get("v").and_then(Value::as_signed_integer) {
        Some(1) => {}
        other => return Err(format!("unknown state file version {other:?}")),
    }
    d.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .ok_or(format!("no {key} array"))
}

pub fn versioned(key: &str, items: Vec<Value>) -> Value {
    let mut d = Dictionary::new();
    d.insert("v".into(), 1_i64.into());
    d.insert(key.into(), items.into());
    Value::Dictionary(d)
}

/// The tunnels to bring back after a restart (`up` adds, `down` removes,
/// `up --transient` opts out). Holds SOCKS credentials, so it is 0600.
#[derive(Debug)]
pub struct DesiredTunnels {
    file: StateFile,
    specs: Vec<TunnelSpec>,
}

impl DesiredTunnels {
    pub const FILE: &'static str = "tunnels.plist";

    pub fn open(state_dir: &Path) -> io::Result<(Self, Loaded<usize>)> {
        let file = StateFile::new(state_dir, Self::FILE, 0o600);
        let (specs, report) = file.load_list(|v| {
            versioned_list(v, "tunnels")?
                .iter()
                .enumerate()
                .map(|(i, t)| TunnelSpec::from_value(t).map_err(|e| format!("tunnels[{i}]: {e}")))
                .collect()
        })?;
        Ok((Self { file, specs }, report))
    }

    pub fn specs(&self) -> &[TunnelSpec] {
        &self.specs
    }

    /// Remembers `spec` (replacing one of the same name) unless it is transient.
    pub fn want(&mut self, spec: &TunnelSpec) -> io::Result<()> {
        let before = self.specs.clone();
        self.specs.retain(|s| s.name != spec.name);
        if !spec.transient {
            self.specs.push(spec.clone());
        }
        self.commit(before)
    }

    pub fn forget(&mut self, name: &TunnelName) -> io::Result<()> {
        let before = self.specs.clone();
        self.specs.retain(|s| &s.name != name);
        self.commit(before)
    }

    fn commit(&mut self, before: Vec<TunnelSpec>) -> io::Result<()> {
        if self.specs == before {
            return Ok(());
        }
        let value = versioned(
            "tunnels",
            self.specs.iter().map(TunnelSpec::to_value).collect(),
        );
        self.file.save(&value).inspect_err(|_| self.specs = before)
    }
}

/// What the helper left in the firewall: whether a kill switch is
/// installed and the enable reference it holds (pf's token on macOS), so
/// the next start knows to clear it and can give the reference back even
/// after a SIGKILL.
#[derive(Debug)]
pub struct KillSwitchRecord {
    file: StateFile,
    installed: bool,
    token: Option<u64>,
}

impl KillSwitchRecord {
    pub const FILE: &'static str = "kill-switch.plist";

    pub fn open(state_dir: &Path) -> io::Result<(Self, Loaded<()>)> {
        let file = StateFile::new(state_dir, Self::FILE, 0o644);
        let loaded = file.load(|v| {
            let d = v.as_dictionary().ok_or("not a dictionary")?;
            match d.get("v").and_then(Value::as_signed_integer) {
                Some(1) => {}
                other => return Err(format!("unknown state file version {other:?}")),
            }
            let installed = d
                .get("installed")
                .and_then(Value::as_boolean)
                .ok_or("no installed flag")?;
            let token = match d.get("pf_token") {
                None => None,
                Some(t) => Some(
                    t.as_unsigned_integer()
                        .ok_or("pf_token is not an integer")?,
                ),
            };
            Ok((installed, token))
        })?;
        let (installed, token, report) = match loaded {
            Loaded::Loaded((i, t)) => (i, t, Loaded::Loaded(())),
            Loaded::Fresh => (false, None, Loaded::Fresh),
            // Unknown: clear whatever may be there.
            Loaded::Corrupt { moved_to, reason } => {
                (true, None, Loaded::Corrupt { moved_to, reason })
            }
        };
        Ok((
            Self {
                file,
                installed,
                token,
            },
            report,
        ))
    }

    /// A kill switch may be in the kernel (installed by this run or left by
    /// an earlier one).
    pub fn installed(&self) -> bool {
        self.installed
    }

    pub fn token(&self) -> Option<u64> {
        self.token
    }

    pub fn record(&mut self, installed: bool, token: Option<u64>) -> io::Result<()> {
        if (installed, token) == (self.installed, self.token) && self.file.path().exists() {
            return Ok(());
        }
        let mut d = Dictionary::new();
        d.insert("v".into(), 1_i64.into());
        d.insert("installed".into(), installed.into());
        if let Some(t) = token {
            d.insert("pf_token".into(), t.into());
        }
        self.file.save(&Value::Dictionary(d))?;
        self.installed = installed;
        self.token = token;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn spec(name: &str, transient: bool) -> TunnelSpec {
        let mut s = TunnelSpec::new(name.parse().unwrap());
        s.routes = vec!["203.0.113.0/24".parse().unwrap()];
        s.upstream = "socks5://alice:s3cret@192.0.2.10:1080".parse().unwrap();
        s.transient = transient;
        s
    }

    #[test]
    fn wanted_tunnels_come_back_after_a_restart_with_their_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let (mut desired, loaded) = DesiredTunnels::open(dir.path()).unwrap();
        assert_eq!(loaded, Loaded::Fresh);
        desired.want(&spec("work", false)).unwrap();
        desired.want(&spec("home", false)).unwrap();
        drop(desired);
        let (again, loaded) = DesiredTunnels::open(dir.path()).unwrap();
        assert_eq!(loaded, Loaded::Loaded(2));
        assert_eq!(again.specs(), [spec("work", false), spec("home", false)]);
    }

    #[test]
    fn the_file_is_private_because_it_holds_passwords() {
        let dir = tempfile::tempdir().unwrap();
        let (mut desired, _) = DesiredTunnels::open(dir.path()).unwrap();
        desired.want(&spec("work", false)).unwrap();
        let path = dir.path().join(DesiredTunnels::FILE);
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(
            fs::read_to_string(&path).unwrap().contains("s3cret"),
            "restoring needs the real password"
        );
    }

    #[test]
    fn transient_and_downed_tunnels_are_not_restored() {
        let dir = tempfile::tempdir().unwrap();
        let (mut desired, _) = DesiredTunnels::open(dir.path()).unwrap();
        desired.want(&spec("work", false)).unwrap();
        desired.want(&spec("demo", true)).unwrap();
        desired.want(&spec("home", false)).unwrap();
        desired.forget(&"home".parse().unwrap()).unwrap();
        assert_eq!(
            DesiredTunnels::open(dir.path()).unwrap().0.specs(),
            [spec("work", false)]
        );
    }

    #[test]
    fn bringing_a_tunnel_up_again_replaces_its_spec() {
        let dir = tempfile::tempdir().unwrap();
        let (mut desired, _) = DesiredTunnels::open(dir.path()).unwrap();
        desired.want(&spec("work", false)).unwrap();
        let mut changed = spec("work", false);
        changed.mtu = 1500;
        desired.want(&changed).unwrap();
        assert_eq!(
            DesiredTunnels::open(dir.path()).unwrap().0.specs(),
            [changed]
        );
    }

    #[test]
    fn the_kill_switch_record_keeps_the_pf_token_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (mut record, loaded) = KillSwitchRecord::open(dir.path()).unwrap();
        assert_eq!(loaded, Loaded::Fresh);
        assert!(!record.installed());
        record.record(true, Some(u64::MAX - 1)).unwrap();
        let (again, loaded) = KillSwitchRecord::open(dir.path()).unwrap();
        assert_eq!(loaded, Loaded::Loaded(()));
        assert!(again.installed());
        assert_eq!(again.token(), Some(u64::MAX - 1));
    }

    #[test]
    fn an_unreadable_kill_switch_record_means_clear_whatever_is_there() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(KillSwitchRecord::FILE), "not a plist").unwrap();
        let (record, loaded) = KillSwitchRecord::open(dir.path()).unwrap();
        assert!(matches!(loaded, Loaded::Corrupt { .. }), "{loaded:?}");
        assert!(record.installed());
        assert_eq!(record.token(), None);
    }

    #[test]
    fn a_spec_that_no_longer_validates_moves_the_file_aside() {
        let dir = tempfile::tempdir().unwrap();
        let (mut desired, _) = DesiredTunnels::open(dir.path()).unwrap();
        desired.want(&spec("work", false)).unwrap();
        let path = dir.path().join(DesiredTunnels::FILE);
        fs::write(
            &path,
            fs::read_to_string(&path)
                .unwrap()
                .replace("<integer>9000</integer>", "<integer>100</integer>"),
        )
        .unwrap();
        let (desired, loaded) = DesiredTunnels::open(dir.path()).unwrap();
        assert!(desired.specs().is_empty());
        let Loaded::Corrupt { reason, moved_to } = loaded else {
            panic!("{loaded:?}")
        };
        assert_eq!(
            reason,
            "tunnels[0]: tunnel.mtu: 100 is below the minimum 576"
        );
        assert!(moved_to
            .to_string_lossy()
            .contains("tunnels.plist.corrupt-"));
    }
}
