//! A host double for unit tests: records every call as a typed value, keeps a
//! model of mounts and running jails, and can be told to fail the Nth call.
//! Clones share one model, so a test keeps a handle on what the engine (which
//! owns its host) asked for.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{Host, HostError, JailSpec, Running};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Mount {
        src: PathBuf,
        dst: PathBuf,
        read_only: bool,
    },
    Unmount(PathBuf),
    StartJail(String),
    StopJail(String),
    RunCommand(String),
    ClearFlags(PathBuf),
}

#[derive(Debug, Default)]
struct Model {
    calls: Vec<Call>,
    mounted: BTreeSet<PathBuf>,
    running: BTreeMap<String, (u32, PathBuf)>,
    next_jid: u32,
    fail_at: Option<usize>,
}

#[derive(Debug, Default, Clone)]
pub struct RecordingHost {
    model: Arc<Mutex<Model>>,
}

impl RecordingHost {
    pub fn new() -> Self {
        Self::default()
    }

    /// Make the `n`th (1-based) mutating call fail.
    pub fn fail_call(&self, n: usize) {
        self.lock().fail_at = Some(n);
    }

    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Model> {
        self.model.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, call: Call) -> Result<std::sync::MutexGuard<'_, Model>, HostError> {
        let mut m = self.lock();
        m.calls.push(call.clone());
        if m.fail_at == Some(m.calls.len()) {
            return Err(HostError::Injected(format!("{call:?}")));
        }
        Ok(m)
    }
}

impl Host for RecordingHost {
    fn name(&self) -> &'static str {
        "recording"
    }
    fn mount(&self, src: &Path, dst: &Path, read_only: bool) -> Result<(), HostError> {
        let mut m = self.record(Call::Mount {
            src: src.to_owned(),
            dst: dst.to_owned(),
            read_only,
        })?;
        m.mounted.insert(dst.to_owned());
        Ok(())
    }
    fn unmount(&self, dst: &Path) -> Result<(), HostError> {
        let mut m = self.record(Call::Unmount(dst.to_owned()))?;
        m.mounted.remove(dst);
        Ok(())
    }
    fn is_mounted(&self, dst: &Path) -> Result<bool, HostError> {
        Ok(self.lock().mounted.contains(dst))
    }
    fn start_jail(&self, jail: &JailSpec) -> Result<u32, HostError> {
        let mut m = self.record(Call::StartJail(jail.name.clone()))?;
        if let Some((jid, _)) = m.running.get(&jail.name) {
            return Ok(*jid);
        }
        m.next_jid += 1;
        let jid = m.next_jid;
        m.running
            .insert(jail.name.clone(), (jid, jail.path.clone()));
        Ok(jid)
    }
    fn stop_jail(&self, jail: &JailSpec) -> Result<(), HostError> {
        let mut m = self.record(Call::StopJail(jail.name.clone()))?;
        m.running.remove(&jail.name);
        Ok(())
    }
    fn running(&self) -> Result<Vec<Running>, HostError> {
        Ok(self
            .lock()
            .running
            .iter()
            .map(|(name, (jid, path))| Running {
                name: name.clone(),
                jid: *jid,
                path: path.clone(),
            })
            .collect())
    }
    fn run_command(
        &self,
        command: &str,
        _args: &[String],
        _env: &[(String, String)],
        _timeout: Option<std::time::Duration>,
    ) -> Result<(), HostError> {
        drop(self.record(Call::RunCommand(command.to_owned()))?);
        Ok(())
    }
    fn clear_flags(&self, path: &Path) -> Result<(), HostError> {
        drop(self.record(Call::ClearFlags(path.to_owned()))?);
        Ok(())
    }
}
